"""The types of a model call, shared by the door (`llm`) and the providers: the resolved model
spec, the request, the completion, the errors and the provider interface."""

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    model: str
    base_url: str = ""
    api_key_env: str = ""
    input_per_mtok: Decimal = Decimal("0")
    output_per_mtok: Decimal = Decimal("0")
    cache_read_per_mtok: Decimal = Decimal("0")
    cache_write_per_mtok: Decimal = Decimal("0")
    max_output_tokens: int = 8192
    options: dict = field(default_factory=dict)
    # Why this spec runs offline although its profile names a real provider ("" when it does not).
    fallback_reason: str = ""

    @classmethod
    def from_profile(cls, profile) -> "ModelSpec":
        return cls(
            name=profile.name,
            provider=profile.provider,
            model=profile.model,
            base_url=profile.base_url,
            api_key_env=profile.api_key_env,
            input_per_mtok=profile.input_per_mtok,
            output_per_mtok=profile.output_per_mtok,
            cache_read_per_mtok=profile.cache_read_per_mtok,
            cache_write_per_mtok=profile.cache_write_per_mtok,
            max_output_tokens=profile.max_output_tokens,
            options=dict(profile.options or {}),
        )

    def cost(self, completion: "Completion") -> Decimal:
        return (
            completion.input_tokens * self.input_per_mtok
            + completion.output_tokens * self.output_per_mtok
            + completion.cache_read_tokens * self.cache_read_per_mtok
            + completion.cache_write_tokens * self.cache_write_per_mtok
        ) / MTOK

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"


OFFLINE_DEFAULT = ModelSpec(name="offline", provider="offline", model="openclaw-offline-1")


@dataclass
class LLMRequest:
    purpose: str  # "plan", "agent" or "synthesis"
    system: str
    prompt: str
    timeout: float  # seconds the whole call may take
    pool: str = ""
    role: str = ""  # the pool's role (codegen, security, database, …): what the agent is asked to do
    max_tokens: int = 4096
    expected_output_tokens: int = 1500
    # Structured facts for the offline provider, which has no model to read the prompt with.
    meta: dict = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str = ""
    provider: str = ""


class LLMError(Exception):
    """A failed call. `retryable` says whether another attempt could succeed."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class LLMTimeout(LLMError):
    pass


ProgressCallback = Callable[[float], None]


class Provider(Protocol):
    def complete(
        self, spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None
    ) -> Completion: ...

    def expected_latency(self, spec: ModelSpec, request: LLMRequest) -> float | None: ...

    def warm(self, spec: ModelSpec) -> None: ...
