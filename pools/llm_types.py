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


@dataclass(frozen=True)
class Tool:
    """A tool offered to the model: the same name and JSON-schema arguments for both SDKs."""

    name: str
    description: str
    parameters: dict  # a JSON schema of the arguments object


@dataclass(frozen=True)
class ToolCall:
    """A tool call in a model's reply. `arguments` is None when the model sent something that is not a
    JSON object (`raw` keeps it, so the model can be told)."""

    id: str
    name: str
    arguments: dict | None
    raw: str = ""


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Message:
    """One message of a conversation, the same for every provider: a user's text, an assistant's
    text and tool calls, or the results of those tool calls (role "tool")."""

    role: str  # "user", "assistant" or "tool"
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


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
    # A conversation in progress: the messages after the first user message (`prompt`), and the
    # tools the model may call. Without tools the call is a single reply.
    history: tuple[Message, ...] = ()
    tools: tuple[Tool, ...] = ()

    def messages(self) -> list[Message]:
        return [Message("user", self.prompt), *self.history]

    def conversation_chars(self) -> int:
        """The size of what is sent, for an estimate when a server reports no usage."""
        total = len(self.system) + len(self.prompt)
        for message in self.history:
            total += len(message.text)
            total += sum(len(c.raw) or len(str(c.arguments)) for c in message.tool_calls)
            total += sum(len(r.content) for r in message.tool_results)
        return total


@dataclass
class Completion:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str = ""
    provider: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class LLMError(Exception):
    """A failed call. `retryable` says whether another attempt could succeed."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class LLMTimeout(LLMError):
    """The call (or the attempt's deadline) ran out of time."""


ProgressCallback = Callable[[float], None]


class Provider(Protocol):
    def complete(
        self, spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None
    ) -> Completion: ...

    def expected_latency(self, spec: ModelSpec, request: LLMRequest) -> float | None: ...

    def warm(self, spec: ModelSpec) -> None: ...
