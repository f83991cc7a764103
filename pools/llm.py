"""The one door to language models: resolve a profile to a provider and call it.

Providers: `offline` (built in, deterministic), `anthropic` and `openai` (official SDKs). A
profile whose API key is missing falls back to offline and says so, so the pipeline always runs.
"""

import logging
import os
import re
import time
from dataclasses import replace

from django.conf import settings

from .llm_types import (
    OFFLINE_DEFAULT,
    Completion,
    LLMError,
    LLMRequest,
    LLMTimeout,
    ModelSpec,
    ProgressCallback,
    Provider,
)
from .models import API_KEY_ENV_PATTERN, ModelProfile
from .offline import OfflineProvider
from .storable import storable

__all__ = ["Completion", "LLMError", "LLMRequest", "LLMTimeout", "ModelSpec", "complete", "resolve"]

log = logging.getLogger("openclaw.llm")

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
    if spec.api_key_env and not re.fullmatch(API_KEY_ENV_PATTERN, spec.api_key_env):
        # A row written around the admin's validation still never sends another secret anywhere.
        return _offline_instead(spec, f"{spec.api_key_env} is not a *_API_KEY variable")
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
        return OfflineProvider()
    if spec.provider == "anthropic":
        from .providers import AnthropicProvider  # noqa: PLC0415 (the SDKs load only where a real model is called)

        return AnthropicProvider()
    if spec.provider == "openai":
        from .providers import OpenAIProvider  # noqa: PLC0415 (the SDKs load only where a real model is called)

        return OpenAIProvider()
    raise LLMError(f"unknown provider {spec.provider!r}", retryable=False)


def warm_providers() -> list[str]:
    """Load the SDKs and build the clients of the model profiles as they resolve now; returns the
    labels of the real models warmed.

    A worker process calls it as it boots. Left to a worker's first model call, the SDKs' import
    (over a second of CPU on a small machine) delays that call, and every other first call of the
    process waits for it on the interpreter's import lock: the parallel tasks of the first execution
    after a start reach their models that far apart. A profile that runs offline (no key) loads
    nothing, so an offline run keeps its memory.
    """
    warmed = []
    for profile in ModelProfile.objects.all():
        spec = resolve(profile)
        if spec.provider != "offline":
            provider_for(spec).warm(spec)
            warmed.append(spec.label)
    return warmed


def complete(spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None = None) -> Completion:
    started = time.monotonic()
    try:
        completion = storable_completion(provider_for(spec).complete(spec, request, on_progress))
    except LLMError as exc:  # its message may quote the server's own words: kept as attempts' errors
        exc.args = tuple(storable(arg) if isinstance(arg, str) else arg for arg in exc.args)
        raise
    log.debug(
        "%s %s %.2fs in=%d out=%d",
        spec.label,
        request.purpose,
        time.monotonic() - started,
        completion.input_tokens,
        completion.output_tokens,
    )
    return completion


def storable_completion(completion: Completion) -> Completion:
    """The reply with what no database stores (a NUL, an unpaired surrogate) replaced in its text
    and tool calls (`pools.storable`): a model's reply is kept in transcripts and results."""
    calls = tuple(
        replace(
            call,
            id=storable(call.id),
            name=storable(call.name),
            arguments=storable(call.arguments),
            raw=storable(call.raw),
        )
        for call in completion.tool_calls
    )
    return replace(completion, text=storable(completion.text), tool_calls=calls)


def expected_latency(spec: ModelSpec, request: LLMRequest) -> float | None:
    """How long the call is expected to take, when the provider knows (the offline one does);
    None lets the caller use observed history instead."""
    return provider_for(spec).expected_latency(spec, request)
