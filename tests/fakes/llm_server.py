"""A local HTTP server speaking the Anthropic Messages and OpenAI Chat Completions wire protocols.

Tests point the official SDKs at it, so what they exercise is the real client code: headers,
server-sent events, error bodies, retry-after. Replies are scripted per request:

    with FakeLLMServer() as server:
        server.script([Error(status=429, retry_after=1), Reply(text="hi", usage={"input_tokens": 9})])
        ... call the provider with base_url=server.anthropic_base_url ...
        assert server.requests[-1].body["model"] == "claude-sonnet-4-5"

Without a script the server answers every request with `default_reply(body)` (a text, or a Reply
— a function of the conversation so far scripts a multi-turn tool loop).

A Reply with `tool_calls` answers with tool use in the protocol's own shape: `tool_use` blocks
(`input_json_delta` when streamed, stop reason `tool_use`) or `tool_calls` (argument fragments when
streamed, finish reason `tool_calls`).
"""

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OPENAI_ERRORS = {  # status -> (type, code), as api.openai.com sends them
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


@dataclass
class Reply:
    """A successful reply. `usage` keys: input_tokens, output_tokens, cache_read_tokens, cache_write_tokens.

    Streamed in deltas of `chunk_size` characters, `chunk_delay` seconds apart. `send_usage=False`
    leaves usage out (an OpenAI-compatible server that ignores `stream_options`).
    """

    text: str | None = None
    usage: dict | None = None
    model: str | None = None
    chunk_size: int = 16
    chunk_delay: float = 0.0
    send_usage: bool = True
    # [{"name", "arguments": dict or raw JSON text, "id" (optional)}]
    tool_calls: list = field(default_factory=list)

    def calls(self) -> list[tuple[str, str, str]]:
        """(id, name, arguments as JSON text) of each tool call."""
        out = []
        for n, call in enumerate(self.tool_calls):
            arguments = call.get("arguments", {})
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            out.append((call.get("id") or f"toolu_{n:02d}{uuid.uuid4().hex[:18]}", call["name"], raw))
        return out


@dataclass
class Error:
    """An error response with the provider's real body; `mid_stream` sends it inside a 200 stream."""

    status: int
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    type: str | None = None
    mid_stream: bool = False


@dataclass
class Slow:
    """Wait `seconds` before answering (with `then`, or the default reply)."""

    seconds: float
    then: Reply | Error | None = None


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class ReceivedRequest:
    path: str
    headers: dict  # lower-cased names
    body: dict
    at: float  # time.monotonic() when it arrived


Action = Reply | Error | Slow | Drop


def _echo_reply(body: dict) -> str:
    return "ok"


@dataclass
class _State:
    queue: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    default_reply: Callable[[dict], "str | Reply"] = _echo_reply
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args) -> None:
        pass  # quiet test output

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout under test); nothing to answer

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        with state.lock:
            state.requests.append(
                ReceivedRequest(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
            )
            action = state.queue.pop(0) if state.queue else None
        if self.path.rstrip("/").endswith("/v1/messages"):
            protocol = _Anthropic(self, body)
        elif self.path.rstrip("/").endswith("/chat/completions"):
            protocol = _OpenAI(self, body)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}, {})
            return
        while isinstance(action, Slow):
            if state.closing.wait(action.seconds):
                return
            action = action.then
        if isinstance(action, Drop):
            self.close_connection = True
            return
        if isinstance(action, Error):
            protocol.error(action)
            return
        reply = action or Reply()
        if reply.text is None and not reply.tool_calls:
            default = state.default_reply(body)
            reply = default if isinstance(default, Reply) else Reply(**{**reply.__dict__, "text": default})
        if reply.text is None:
            reply = Reply(**{**reply.__dict__, "text": ""})
        protocol.reply(reply)

    def _send_json(self, status: int, payload: dict, headers: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, headers: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_chunk(self, data: str) -> None:
        encoded = data.encode()
        self.wfile.write(f"{len(encoded):x}\r\n".encode() + encoded + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _pieces(reply: Reply, text: str | None = None) -> list[str]:
    text = reply.text if text is None else text
    size = max(1, reply.chunk_size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _usage(reply: Reply, body: dict) -> dict:
    """The reply's token counts, estimated at 4 characters a token where the script gives none."""
    given = reply.usage or {}
    prompt_chars = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    return {
        "input_tokens": given.get("input_tokens", max(1, prompt_chars // 4)),
        "output_tokens": given.get(
            "output_tokens", max(1, (len(reply.text) + sum(len(c[2]) for c in reply.calls())) // 4)
        ),
        "cache_read_tokens": given.get("cache_read_tokens", 0),
        "cache_write_tokens": given.get("cache_write_tokens", 0),
    }


def _retry_headers(error: Error) -> dict:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = str(error.retry_after_ms)
    return headers


class _Anthropic:
    def __init__(self, handler: _Handler, body: dict):
        self.handler = handler
        self.body = body
        self.request_id = f"req_{uuid.uuid4().hex[:24]}"

    def error(self, error: Error) -> None:
        kind = error.type or ANTHROPIC_ERROR_TYPES.get(error.status, "api_error")
        payload = {
            "type": "error",
            "error": {"type": kind, "message": error.message or kind.replace("_", " ").capitalize()},
            "request_id": self.request_id,
        }
        if error.mid_stream:
            self.handler._start_stream({"request-id": self.request_id})
            self.handler._send_chunk(f"event: error\ndata: {json.dumps(payload)}\n\n")
            self.handler._end_stream()
            return
        headers = {"request-id": self.request_id, **_retry_headers(error)}
        if error.status in (429, 500, 529):
            headers["x-should-retry"] = "true"
        self.handler._send_json(error.status, payload, headers)

    def reply(self, reply: Reply) -> None:
        usage = _usage(reply, self.body)
        model = reply.model or self.body.get("model", "claude-fake")
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        calls = reply.calls()
        cache = {
            "cache_creation_input_tokens": usage["cache_write_tokens"],
            "cache_read_input_tokens": usage["cache_read_tokens"],
        }
        if not self.body.get("stream"):
            self.handler._send_json(
                200,
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": ([{"type": "text", "text": reply.text}] if reply.text or not calls else [])
                    + [
                        {"type": "tool_use", "id": call_id, "name": name, "input": json.loads(raw)}
                        for call_id, name, raw in calls
                    ],
                    "stop_reason": "tool_use" if calls else "end_turn",
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage["input_tokens"],
                        "output_tokens": usage["output_tokens"],
                        **cache,
                    },
                },
                {"request-id": self.request_id},
            )
            return
        h = self.handler
        h._start_stream({"request-id": self.request_id})

        def event(name: str, data: dict) -> None:
            h._send_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n")

        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1, **cache},
                },
            },
        )
        event("ping", {"type": "ping"})
        index = 0
        if reply.text or not calls:
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            for piece in _pieces(reply):
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            index = 1
        for call_id, name, raw in calls:
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
                },
            )
            for piece in _pieces(reply, raw):
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        delta_usage = {"output_tokens": usage["output_tokens"]} if reply.send_usage else {"output_tokens": 0}
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        )
        event("message_stop", {"type": "message_stop"})
        h._end_stream()


class _OpenAI:
    def __init__(self, handler: _Handler, body: dict):
        self.handler = handler
        self.body = body
        self.request_id = f"req_{uuid.uuid4().hex}"

    def error(self, error: Error) -> None:
        kind, code = OPENAI_ERRORS.get(error.status, ("server_error", None))
        payload = {
            "error": {
                "message": error.message or f"Error {error.status}",
                "type": error.type or kind,
                "param": None,
                "code": code,
            }
        }
        if error.mid_stream:
            self.handler._start_stream({"x-request-id": self.request_id})
            self.handler._send_chunk(f"data: {json.dumps(payload)}\n\n")
            self.handler._end_stream()
            return
        self.handler._send_json(
            error.status, payload, {"x-request-id": self.request_id, **_retry_headers(error)}
        )

    def reply(self, reply: Reply) -> None:
        usage = _usage(reply, self.body)
        model = reply.model or self.body.get("model", "gpt-fake")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())
        calls = reply.calls()
        finish = "tool_calls" if calls else "stop"
        prompt_tokens = usage["input_tokens"] + usage["cache_read_tokens"]
        usage_block = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": usage["output_tokens"],
            "total_tokens": prompt_tokens + usage["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cache_read_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if not self.body.get("stream"):
            self.handler._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": reply.text or None if calls else reply.text,
                                "refusal": None,
                                **(
                                    {
                                        "tool_calls": [
                                            {
                                                "id": call_id,
                                                "type": "function",
                                                "function": {"name": name, "arguments": raw},
                                            }
                                            for call_id, name, raw in calls
                                        ]
                                    }
                                    if calls
                                    else {}
                                ),
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage_block,
                    "system_fingerprint": None,
                },
                {"x-request-id": self.request_id},
            )
            return
        include_usage = (
            bool((self.body.get("stream_options") or {}).get("include_usage")) and reply.send_usage
        )
        h = self.handler
        h._start_stream({"x-request-id": self.request_id})

        def chunk(choices: list, **extra) -> None:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }
            if include_usage:
                data.setdefault("usage", None)
            h._send_chunk(f"data: {json.dumps(data)}\n\n")

        chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        for piece in _pieces(reply) if reply.text or not calls else []:
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            chunk([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        for n, (call_id, name, raw) in enumerate(calls):
            start = {
                "index": n,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            chunk([{"index": 0, "delta": {"tool_calls": [start]}, "logprobs": None, "finish_reason": None}])
            for piece in _pieces(reply, raw):
                fragment = {"index": n, "function": {"arguments": piece}}
                chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [fragment]},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            chunk([], usage=usage_block)
        h._send_chunk("data: [DONE]\n\n")
        h._end_stream()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FakeLLMServer:
    """The fake API on 127.0.0.1 on a free port, served from a thread. Use as a context manager."""

    def __init__(self, default_reply: Callable[[dict], "str | Reply"] = _echo_reply):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(default_reply=default_reply)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def anthropic_base_url(self) -> str:
        """What the anthropic SDK wants: it appends /v1/messages itself."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """What the openai SDK wants: it appends /chat/completions."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    def script(self, actions: list[Action]) -> None:
        """Answer the next requests with these actions, in order; then the default reply again."""
        with self._server.state.lock:
            self._server.state.queue.extend(actions)

    def set_default_reply(self, default_reply: Callable[[dict], "str | Reply"]) -> None:
        self._server.state.default_reply = default_reply

    def start(self) -> "FakeLLMServer":
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.state.closing.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
