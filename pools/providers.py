"""Anthropic and OpenAI-compatible providers over the official SDKs.

Both stream, so progress is visible while a model writes, and both run our own retry loop with the
SDKs' retries turned off: the SDK would retry outside the attempt's deadline (DESIGN.md, pitfalls).
The stream is read on a helper thread while the caller's thread waits on a queue, so the deadline
holds even when a server trickles bytes slowly enough to never trip the socket read timeout.
"""

import abc
import email.utils
import functools
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai

from .llm_types import (
    Completion,
    LLMError,
    LLMRequest,
    LLMTimeout,
    ModelSpec,
    ProgressCallback,
    ToolCall,
)
from .storable import json_loads

log = logging.getLogger("openclaw.llm")

# A request that cannot succeed however often it is sent.
FATAL_STATUS = frozenset({400, 401, 403, 404, 422})
# Anthropic reports some failures inside a 200 stream as an `error` event; these types are transient.
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "rate_limit_error", "api_error", "timeout_error"})
CONNECT_TIMEOUT_SEC = 10.0
MAX_BACKOFF_SEC = 30.0
PROGRESS_INTERVAL_SEC = 0.25
CHARS_PER_TOKEN = 4
# Reasoning models behind OpenAI-compatible APIs (MiniMax, Qwen, DeepSeek) may prefix their answer
# with their thinking; the answer is what the caller parses.
THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class _DeadlineReached(Exception):
    pass


class _IncompleteStream(Exception):
    """The connection closed before the provider said the reply was complete."""


@dataclass
class _Failure:
    retryable: bool
    message: str
    retry_after: float | None = None


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
MAX_TOKENS_PER_CALL = 100_000_000  # far past any model's window: a larger count is a broken server's


def plausible_count(count: Any) -> int | None:
    """A server's token count, or None when it is not one."""
    if count is None:
        return None
    if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_TOKENS_PER_CALL:
        return count
    log.warning("implausible token count %r from a model server: the call is billed by an estimate", count)
    return None


@dataclass
class _Usage:
    """A server's token counts; a count that is none (negative, past any model's window, not an
    integer) is taken as not reported, so the call is billed by the estimate instead of as free,
    as a credit, or past what the ledger's columns hold."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    def __post_init__(self) -> None:
        self.implausible: set[str] = set()
        for name in USAGE_FIELDS:
            count = getattr(self, name)
            setattr(self, name, plausible_count(count))
            if count is not None and getattr(self, name) is None:
                self.implausible.add(name)

    def merge(self, other: "_Usage") -> None:
        """Take every count the newer block reports (providers send cumulative figures); one it
        reports implausibly voids the count so far (Anthropic's first block says output_tokens 1)."""
        for name in USAGE_FIELDS:
            value = getattr(other, name)
            if value is not None or name in other.implausible:
                setattr(self, name, value)


# What a provider's stream yields, in order of arrival.
_Text = str


@dataclass
class _Model:
    name: str


@dataclass
class _ToolStart:
    """A tool call begins: its position in the reply, id and name."""

    index: int
    id: str
    name: str


@dataclass
class _ToolArguments:
    """A fragment of a tool call's arguments (JSON text, streamed in pieces)."""

    index: int
    fragment: str


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    try:
        arguments = json_loads(raw) if raw.strip() else {}
    except ValueError:
        arguments = None
    return ToolCall(call_id, name, arguments if isinstance(arguments, dict) else None, raw)


class _ProgressMeter:
    """Turns streamed characters into throttled, non-decreasing progress fractions."""

    def __init__(self, callback: ProgressCallback | None, expected_tokens: int):
        self.callback = callback
        self.expected_tokens = max(1, expected_tokens)
        self.reported = 0.0
        self.last_call = float("-inf")

    def update(self, chars: int) -> None:
        if self.callback is None:
            return
        fraction = min(0.99, chars / CHARS_PER_TOKEN / self.expected_tokens)
        now = time.monotonic()
        if fraction <= self.reported or now - self.last_call < PROGRESS_INTERVAL_SEC:
            return
        self.reported, self.last_call = fraction, now
        try:
            self.callback(fraction)
        except Exception:
            # Progress is cosmetic; a failing listener must not fail the model call.
            log.exception("progress callback failed")


def _read_until(events: Iterator[Any], deadline: float) -> Iterator[Any]:
    """Yield the items of a blocking iterator, giving up at `deadline` even in the middle of a read.

    The iterator runs on a daemon thread; when we give up it stops at its next item (or when its
    own socket timeout, never longer than the deadline that was left, fires).
    """
    items: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    done = object()

    def pump() -> None:
        try:
            for item in events:
                items.put(item)
                if stop.is_set():
                    break
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            items.put(exc)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    threading.Thread(target=pump, name="llm-stream", daemon=True).start()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlineReached
            try:
                item = items.get(timeout=remaining)
            except queue.Empty:
                raise _DeadlineReached from None
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _retry_after(headers: httpx2.Headers | None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` seconds or date)."""
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_field(exc: Exception, name: str) -> str | None:
    """A field of the error object in the provider's body (`{"error": {"message", "type"}}`)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)  # the openai SDK hands over the inner object already
        if isinstance(error, dict) and isinstance(error.get(name), str):
            return error[name]
    return None


def _api_message(exc: Exception) -> str:
    """The provider's own error message when its body has one, else the SDK's."""
    return _error_field(exc, "message") or str(getattr(exc, "message", None) or exc)


def _classify(exc: Exception, provider: str) -> _Failure | None:
    """How to react to an exception raised by an attempt; None for errors that are not the API's."""
    status_error = (anthropic.APIStatusError, openai.APIStatusError)
    if isinstance(exc, status_error):
        status = exc.status_code
        message = f"{provider} HTTP {status}: {_api_message(exc)}"
        if status == 200:
            # An error event inside a stream that had started well.
            kind = _error_field(exc, "type")
            return _Failure(
                kind in RETRYABLE_ERROR_TYPES, f"{provider} stream error {kind}: {_api_message(exc)}"
            )
        if status in FATAL_STATUS:
            return _Failure(False, message)
        retryable = status in (408, 409, 429) or status >= 500
        return _Failure(retryable, message, _retry_after(exc.response.headers))
    if isinstance(exc, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return _Failure(True, f"{provider} connection error: {exc.__cause__ or exc}")
    if isinstance(exc, (httpx2.TransportError, _IncompleteStream)):
        # Raised while reading an already opened stream, where the SDKs do not wrap errors.
        return _Failure(True, f"{provider} connection error: {exc!r}")
    if isinstance(exc, openai.APIError):
        # An error object sent inside an OpenAI-compatible stream.
        return _Failure(True, f"{provider} stream error: {_api_message(exc)}")
    if isinstance(exc, (anthropic.AnthropicError, openai.OpenAIError)):
        return _Failure(False, f"{provider}: {exc}")
    return None


class _StreamingProvider(abc.ABC):
    """The retry loop, deadline and progress shared by both SDKs; subclasses open the stream."""

    name = ""

    def __init__(self, *, retries: int = 3, backoff_sec: float = 0.5):
        self.retries = retries
        self.backoff_sec = backoff_sec

    def expected_latency(self, spec: ModelSpec, request: LLMRequest) -> float | None:
        return None  # a real model's latency is learnt from the pool's history

    def complete(
        self, spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None
    ) -> Completion:
        """Call the model, retrying transient failures, within `request.timeout` seconds overall."""
        deadline = time.monotonic() + request.timeout
        meter = _ProgressMeter(on_progress, request.expected_output_tokens)
        api_key = self._api_key(spec)
        attempt = 0
        while True:
            try:
                return self._attempt(spec, request, api_key, deadline, meter)
            except _DeadlineReached:
                raise LLMTimeout(f"{spec.label} did not finish within {request.timeout:g}s") from None
            except Exception as exc:
                failure = _classify(exc, self.name)
                if failure is None:
                    raise
                error = exc
            if not failure.retryable:
                raise LLMError(failure.message, retryable=False) from error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMTimeout(
                    f"{spec.label} did not finish within {request.timeout:g}s: {failure.message}"
                ) from error
            if attempt >= self.retries:
                raise LLMError(f"{failure.message} (after {attempt + 1} attempts)", retryable=True) from error
            delay = failure.retry_after
            if delay is None:
                delay = min(MAX_BACKOFF_SEC, self.backoff_sec * 2**attempt) * random.uniform(0.75, 1.0)
            if delay >= remaining:
                # Sleeping would only end at the deadline; say so now and let the scheduler retry later.
                raise LLMTimeout(
                    f"{spec.label}: {failure.message}; retrying in {delay:.1f}s would pass the deadline"
                ) from error
            log.info(
                "%s attempt %d failed (%s); retrying in %.2fs",
                spec.label,
                attempt + 1,
                failure.message,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def warm(self, spec: ModelSpec) -> None:
        """Build the client that this spec's calls use (it is cached) and load the SDK code its first
        request would: a fresh worker process then makes its first call as fast as its later ones."""
        self._resource(self._client(spec, self._api_key(spec)))

    @abc.abstractmethod
    def _client(self, spec: ModelSpec, api_key: str | None) -> Any:
        """The SDK client for this spec, shared by its calls."""

    @abc.abstractmethod
    def _resource(self, client: Any) -> Any:
        """The client's endpoint that a call streams from (the SDKs load its code on first use)."""

    def _api_key(self, spec: ModelSpec) -> str | None:
        if not spec.api_key_env:
            return None  # the SDK reads its own variable
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise LLMError(f"{spec.api_key_env} is not set", retryable=False)
        return key

    def _attempt(
        self,
        spec: ModelSpec,
        request: LLMRequest,
        api_key: str | None,
        deadline: float,
        meter: "_ProgressMeter",
    ) -> Completion:
        remaining = deadline - time.monotonic()
        timeout = httpx2.Timeout(remaining, connect=min(remaining, CONNECT_TIMEOUT_SEC))
        max_tokens = max(1, min(request.max_tokens, spec.max_output_tokens))
        parts: list[str] = []
        chars = 0
        usage = _Usage()
        model = spec.model
        calls: dict[int, list] = {}  # index -> [id, name, argument fragments]
        for item in _read_until(self._stream(spec, request, api_key, max_tokens, timeout), deadline):
            if isinstance(item, str):
                parts.append(item)
                chars += len(item)
                meter.update(chars)
            elif isinstance(item, _ToolArguments):
                calls.setdefault(item.index, ["", "", []])[2].append(item.fragment)
                chars += len(item.fragment)
                meter.update(chars)
            elif isinstance(item, _ToolStart):
                call = calls.setdefault(item.index, ["", "", []])
                call[0], call[1] = item.id or call[0], item.name or call[1]
            elif isinstance(item, _Usage):
                usage.merge(item)
            elif isinstance(item, _Model):
                model = item.name
        text = THINK_BLOCK.sub("", "".join(parts), count=1)
        tool_calls = tuple(
            _tool_call(call_id or f"call_{index}", name, "".join(fragments))
            for index, (call_id, name, fragments) in sorted(calls.items())
        )
        # Servers that send no usage still get billed by an estimate rather than as free.
        estimate_in = -(-request.conversation_chars() // CHARS_PER_TOKEN)
        estimate_out = -(-chars // CHARS_PER_TOKEN)
        return Completion(
            text=text,
            input_tokens=usage.input_tokens if usage.input_tokens is not None else estimate_in,
            output_tokens=usage.output_tokens if usage.output_tokens is not None else estimate_out,
            cache_read_tokens=usage.cache_read_tokens or 0,
            cache_write_tokens=usage.cache_write_tokens or 0,
            model=model,
            provider=self.name,
            tool_calls=tool_calls,
        )

    @abc.abstractmethod
    def _stream(
        self,
        spec: ModelSpec,
        request: LLMRequest,
        api_key: str | None,
        max_tokens: int,
        timeout: httpx2.Timeout,
    ) -> Iterator[_Text | _Usage | _Model | _ToolStart | _ToolArguments]:
        """The provider's reply as text deltas, tool calls, usage and the model name, in arrival order."""


@functools.lru_cache(maxsize=32)
def _anthropic_client(base_url: str | None, api_key: str | None, _env: tuple) -> anthropic.Anthropic:
    # Cached so calls share a connection pool; `_env` keys the cache on the SDK's own variables.
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


@functools.lru_cache(maxsize=32)
def _openai_client(base_url: str | None, api_key: str | None, _env: tuple) -> openai.OpenAI:
    kwargs: dict[str, Any] = {"api_key": api_key, "max_retries": 0}
    if base_url:
        kwargs["base_url"] = base_url
    return openai.OpenAI(**kwargs)


class AnthropicProvider(_StreamingProvider):
    """Claude through the Messages API, streamed."""

    name = "anthropic"

    def _stream(
        self,
        spec: ModelSpec,
        request: LLMRequest,
        api_key: str | None,
        max_tokens: int,
        timeout: httpx2.Timeout,
    ) -> Iterator[_Text | _Usage | _Model]:
        client = self._client(spec, api_key)
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": max_tokens,
            "messages": self._messages(request),
            "stream": True,
            "timeout": timeout,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        stopped = False
        with self._resource(client).create(**kwargs) as stream:
            for event in stream:
                if event.type == "message_start":
                    yield _Model(event.message.model)
                    yield self._usage(event.message.usage)
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    yield _ToolStart(event.index, event.content_block.id, event.content_block.name)
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield event.delta.text
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    yield _ToolArguments(event.index, event.delta.partial_json)
                elif event.type == "message_delta":
                    if event.delta.stop_reason == "max_tokens":
                        log.warning("%s reply cut at max_tokens=%d", spec.label, max_tokens)
                    yield self._usage(event.usage)
                elif event.type == "message_stop":
                    stopped = True
        if not stopped:
            raise _IncompleteStream("stream ended before message_stop")

    def _client(self, spec: ModelSpec, api_key: str | None) -> anthropic.Anthropic:
        env = tuple(
            os.environ.get(v) for v in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
        )
        return _anthropic_client(spec.base_url or None, api_key, env)

    def _resource(self, client: anthropic.Anthropic) -> Any:
        return client.messages

    @staticmethod
    def _messages(request: LLMRequest) -> list[dict]:
        """The conversation as Messages API content: tool calls are `tool_use` blocks, their results
        `tool_result` blocks in the next user message."""
        out: list[dict] = []
        for message in request.messages():
            if message.role == "user":
                out.append({"role": "user", "content": message.text})
            elif message.role == "assistant":
                content: list[dict] = [{"type": "text", "text": message.text}] if message.text else []
                content += [
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments or {}}
                    for c in message.tool_calls
                ]
                out.append({"role": "assistant", "content": content or [{"type": "text", "text": "…"}]})
            else:
                out.append(
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": r.call_id,
                                "content": r.content,
                                "is_error": r.is_error,
                            }
                            for r in message.tool_results
                        ],
                    }
                )
        return out

    @staticmethod
    def _usage(block: Any) -> _Usage:
        return _Usage(
            input_tokens=getattr(block, "input_tokens", None),
            output_tokens=getattr(block, "output_tokens", None),
            cache_read_tokens=getattr(block, "cache_read_input_tokens", None),
            cache_write_tokens=getattr(block, "cache_creation_input_tokens", None),
        )


class OpenAIProvider(_StreamingProvider):
    """OpenAI or any OpenAI-compatible server (MiniMax, Ollama, vLLM) through Chat Completions, streamed."""

    name = "openai"

    def _stream(
        self,
        spec: ModelSpec,
        request: LLMRequest,
        api_key: str | None,
        max_tokens: int,
        timeout: httpx2.Timeout,
    ) -> Iterator[_Text | _Usage | _Model]:
        completions = self._resource(self._client(spec, api_key))
        messages = self._messages(request)
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        # OpenAI's own reasoning models refuse `max_tokens`; compatible servers often only know it.
        official = not spec.base_url and not os.environ.get("OPENAI_BASE_URL")
        limit = {"max_completion_tokens" if official else "max_tokens": max_tokens}
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "messages": messages,
            "stream": True,
            "timeout": timeout,
            "stream_options": {"include_usage": True},
            **limit,
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        try:
            stream = completions.create(**kwargs)
        except openai.BadRequestError as exc:
            # Some compatible servers reject the field; usage is then estimated.
            if "stream_options" not in str(exc):
                raise
            del kwargs["stream_options"]
            stream = completions.create(**kwargs)
        finished = False
        with stream:
            for chunk in stream:
                if chunk.model:
                    yield _Model(chunk.model)
                if chunk.usage is not None:
                    yield self._usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
                    for call in (choice.delta.tool_calls if choice.delta is not None else None) or ():
                        function = call.function
                        if call.id or (function and function.name):
                            yield _ToolStart(call.index, call.id or "", (function and function.name) or "")
                        if function and function.arguments:
                            yield _ToolArguments(call.index, function.arguments)
                    if choice.finish_reason:
                        finished = True
                        if choice.finish_reason == "length":
                            log.warning("%s reply cut at max_tokens=%d", spec.label, max_tokens)
        if not finished:
            raise _IncompleteStream("stream ended without a finish_reason")

    def _client(self, spec: ModelSpec, api_key: str | None) -> openai.OpenAI:
        env = tuple(os.environ.get(v) for v in ("OPENAI_BASE_URL", "OPENAI_API_KEY"))
        return _openai_client(spec.base_url or None, api_key, env)

    def _resource(self, client: openai.OpenAI) -> Any:
        return client.chat.completions

    @staticmethod
    def _messages(request: LLMRequest) -> list[dict]:
        """The conversation as Chat Completions messages: `tool_calls` on the assistant's message, one
        `tool` message per result."""
        out: list[dict] = []
        for message in request.messages():
            if message.role == "user":
                out.append({"role": "user", "content": message.text})
            elif message.role == "assistant":
                entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
                if message.tool_calls:
                    entry["tool_calls"] = [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.raw or json.dumps(c.arguments or {})},
                        }
                        for c in message.tool_calls
                    ]
                out.append(entry)
            else:
                out += [
                    {"role": "tool", "tool_call_id": r.call_id, "content": r.content}
                    for r in message.tool_results
                ]
        return out

    @staticmethod
    def _usage(block: Any) -> _Usage:
        details = getattr(block, "prompt_tokens_details", None)
        cached = plausible_count(getattr(details, "cached_tokens", None)) or 0
        prompt = plausible_count(getattr(block, "prompt_tokens", None))
        return _Usage(
            # OpenAI counts cached tokens inside prompt_tokens; keep them apart so they are billed once.
            input_tokens=None if prompt is None else max(0, prompt - cached),
            output_tokens=getattr(block, "completion_tokens", None),
            cache_read_tokens=cached,
            cache_write_tokens=getattr(details, "cache_write_tokens", None),
        )
