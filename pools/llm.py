"""The one door to language models: resolve a profile to a provider and call it.

Providers: `offline` (built in, deterministic), `anthropic` and `openai` (official SDKs). A
profile whose API key is missing falls back to offline and says so, so the pipeline always runs.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from django.conf import settings

log = logging.getLogger("openclaw.llm")

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


DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def resolve(profile) -> ModelSpec:
    """The spec to call for a profile (None → offline), falling back to offline without a key."""
    if profile is None:
        return OFFLINE_DEFAULT
    spec = ModelSpec.from_profile(profile)
    if spec.provider == "offline":
        return spec
    if settings.OPENCLAW_OFFLINE:
        return _offline_instead(spec, "OPENCLAW_OFFLINE=1")
    key_env = spec.api_key_env or DEFAULT_KEY_ENV.get(spec.provider, "")
    if not os.environ.get(key_env):
        return _offline_instead(spec, f"{key_env} is not set")
    return spec


def _offline_instead(spec: ModelSpec, reason: str) -> ModelSpec:
    return ModelSpec(
        name=spec.name,
        provider="offline",
        model=f"offline({spec.model})",
        input_per_mtok=spec.input_per_mtok,
        output_per_mtok=spec.output_per_mtok,
        options=spec.options,
        fallback_reason=reason,
    )


def provider_for(spec: ModelSpec) -> Provider:
    if spec.provider == "offline":
        from pools.offline import OfflineProvider

        return OfflineProvider()
    if spec.provider == "anthropic":
        from pools.providers import AnthropicProvider

        return AnthropicProvider()
    if spec.provider == "openai":
        from pools.providers import OpenAIProvider

        return OpenAIProvider()
    raise LLMError(f"unknown provider {spec.provider!r}", retryable=False)


def complete(spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None = None) -> Completion:
    started = time.monotonic()
    completion = provider_for(spec).complete(spec, request, on_progress)
    log.debug(
        "%s %s %.2fs in=%d out=%d",
        spec.label,
        request.purpose,
        time.monotonic() - started,
        completion.input_tokens,
        completion.output_tokens,
    )
    return completion
