"""A local HTTP server speaking Slack's Web API (the parts the bot uses), for `slack_sdk` to talk to.

Point the SDK at `server.url` (SLACK_API_URL / WebClient(base_url=...)). It answers like
slack.com/api: HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": "..."}`, message `ts`
values, `429` + `Retry-After` for rate limits, `5xx` for outages:

    with FakeSlackServer(token="xoxb-test") as slack:
        slack.fail("chat.update", status=429, retry_after=1, times=2)
        ... run the bot with SLACK_API_URL=slack.url ...
        assert [m.text for m in slack.thread("C1", ts)] == [...]

Worker processes call it over HTTP, so the test process sees every call in `slack.calls`.
"""

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode


@dataclass
class Call:
    method: str
    params: dict
    status: int
    error: str | None
    at: float


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list | None
    thread_ts: str | None = None
    user: str | None = None  # set for ephemeral messages: who sees it
    updates: list[dict] = field(default_factory=list)


@dataclass
class Fault:
    status: int
    retry_after: float | None
    times: int | None  # None: until cleared


class FakeSlackServer:
    def __init__(
        self, *, token: str = "xoxb-test-token", team_id: str = "T0LINKED", bot_user_id: str = "UBOT"
    ):
        self.token = token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemeral: list[Message] = []
        self.users: dict[str, dict] = {}
        self.missing_channels: set[str] = set()
        self.faults: dict[str, list[Fault]] = {}
        self.lock = threading.Lock()
        self._ts = itertools.count(1)
        self._base = int(time.time())
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/"

    def __enter__(self) -> "FakeSlackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- scripting -------------------------------------------------------------------------
    def fail(
        self, method: str, *, status: int, retry_after: float | None = None, times: int | None = 1
    ) -> None:
        """The next `times` calls of `method` ("*" for any) fail with `status` (429: ratelimited).

        Faults queue up in the order given; `times=None` fails until `recover()`.
        """
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(status, retry_after, times))

    def recover(self) -> None:
        with self.lock:
            self.faults.clear()

    def add_user(self, user_id: str, *, team_id: str | None = None, name: str = "") -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": name or user_id.lower(),
        }

    # -- inspection ------------------------------------------------------------------------
    def calls_of(self, method: str, *, ok: bool | None = None) -> list[Call]:
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method == method and (ok is None or (c.status == 200 and not c.error) == ok)
            ]

    def channel_messages(self, channel: str) -> list[Message]:
        with self.lock:
            return sorted(
                (m for m in self.messages.values() if m.channel == channel), key=lambda m: float(m.ts)
            )

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The thread's parent (if we posted it) then its replies, in order."""
        return [m for m in self.channel_messages(channel) if m.ts == thread_ts or m.thread_ts == thread_ts]

    def wait_for(self, predicate, timeout: float = 20, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(
            f"fake Slack: condition not met within {timeout}s; calls: "
            f"{[(c.method, c.status, c.error) for c in self.calls]}"
        )

    # -- the API ---------------------------------------------------------------------------
    def _next_ts(self) -> str:
        return f"{self._base}.{next(self._ts):06d}"

    def _fault_for(self, method: str) -> Fault | None:
        for name in (method, "*"):
            queue = self.faults.get(name)
            if not queue:
                continue
            fault = queue[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault
        return None

    def handle(self, method: str, params: dict, auth: str | None) -> tuple[int, dict, dict]:
        """(status, headers, body) for one API call; records it."""
        with self.lock:
            fault = self._fault_for(method)
            if fault is not None:
                if fault.status == 429:
                    status, headers, body = (
                        429,
                        {"Retry-After": str(int(fault.retry_after or 1))},
                        {"ok": False, "error": "ratelimited"},
                    )
                else:
                    status, headers, body = fault.status, {}, {"ok": False, "error": "fatal_error"}
            else:
                token = (auth or "").removeprefix("Bearer ").strip() or params.get("token")
                if token != self.token:
                    status, headers, body = (
                        200,
                        {},
                        {"ok": False, "error": "not_authed" if not token else "invalid_auth"},
                    )
                else:
                    status, headers = 200, {}
                    body = self._ok(method, params)
            self.calls.append(
                Call(method, params, status, None if body.get("ok") else body.get("error"), time.time())
            )
            return status, headers, body

    def _ok(self, method: str, params: dict) -> dict:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake-workspace.slack.com/",
                "team": "Fake Workspace",
                "user": "openclaw",
                "team_id": self.team_id,
                "user_id": self.bot_user_id,
                "bot_id": "B0BOT",
                "is_enterprise_install": False,
            }
        if method == "users.info":
            user = self.users.get(params.get("user", ""))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {
                    **user,
                    "deleted": False,
                    "real_name": user["name"].title(),
                    "is_bot": False,
                    "tz": "UTC",
                    "profile": {"real_name": user["name"].title(), "display_name": user["name"]},
                },
            }
        channel = params.get("channel", "")
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            if not channel or channel in self.missing_channels:
                return {"ok": False, "error": "channel_not_found"}
            if not params.get("text") and not params.get("blocks"):
                return {"ok": False, "error": "no_text"}
        if method == "chat.postMessage":
            message = Message(
                channel=channel,
                ts=self._next_ts(),
                text=params.get("text", ""),
                blocks=params.get("blocks"),
                thread_ts=params.get("thread_ts") or None,
            )
            self.messages[(channel, message.ts)] = message
            return {
                "ok": True,
                "channel": channel,
                "ts": message.ts,
                "message": {
                    "type": "message",
                    "subtype": "bot_message",
                    "text": message.text,
                    "ts": message.ts,
                    "bot_id": "B0BOT",
                    "user": self.bot_user_id,
                    **({"thread_ts": message.thread_ts} if message.thread_ts else {}),
                },
            }
        if method == "chat.update":
            message = self.messages.get((channel, params.get("ts", "")))
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            message.updates.append({"text": message.text, "blocks": message.blocks})
            message.text, message.blocks = (
                params.get("text", message.text),
                params.get("blocks", message.blocks),
            )
            return {
                "ok": True,
                "channel": channel,
                "ts": message.ts,
                "text": message.text,
                "message": {"type": "message", "text": message.text, "ts": message.ts, "bot_id": "B0BOT"},
            }
        if method == "chat.postEphemeral":
            message = Message(
                channel=channel,
                ts=self._next_ts(),
                text=params.get("text", ""),
                blocks=params.get("blocks"),
                thread_ts=params.get("thread_ts") or None,
                user=params.get("user"),
            )
            self.ephemeral.append(message)
            return {"ok": True, "message_ts": message.ts}
        return {"ok": False, "error": "unknown_method"}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if (self.headers.get("Content-Type") or "").startswith("application/json"):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw).items()}
                for key in ("blocks", "attachments"):
                    if isinstance(params.get(key), str):
                        params[key] = json.loads(params[key])
                method = self.path.split("?")[0].rsplit("/", 1)[-1]
                status, headers, body = server.handle(method, params, self.headers.get("Authorization"))
                if status >= 500:
                    payload, content_type = b"<html><body>Internal Server Error</body></html>", "text/html"
                else:
                    payload, content_type = json.dumps(body).encode(), "application/json; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler


# -- what Slack sends to us ------------------------------------------------------------------
def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature: HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_headers(secret: str, body: str, *, timestamp: float | None = None) -> dict:
    """Django test-client headers for a signed Slack request (`timestamp` defaults to now)."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": stamp,
        "HTTP_X_SLACK_SIGNATURE": slack_signature(secret, stamp, body),
    }


def slash_command_body(
    text: str,
    *,
    team_id: str,
    user_id: str,
    channel_id: str = "C0PROJECTS",
    trigger_id: str | None = None,
    command: str = "/openclaw",
) -> str:
    """A slash-command payload as Slack posts it (form-encoded)."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": team_id,
            "team_domain": "fake",
            "channel_id": channel_id,
            "channel_name": "projects",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0OPENCLAW",
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T0/1/abc",
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex[:12]}",
        }
    )


def app_mention_body(
    text: str,
    *,
    team_id: str,
    user_id: str,
    channel_id: str = "C0PROJECTS",
    event_id: str | None = None,
    ts: str | None = None,
    bot_user_id: str = "UBOT",
) -> str:
    """An Events API `app_mention` callback (JSON)."""
    ts = ts or f"{time.time():.6f}"
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": team_id,
            "api_app_id": "A0OPENCLAW",
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": bot_user_id, "is_bot": True}],
            "event": {
                "type": "app_mention",
                "user": user_id,
                "text": f"<@{bot_user_id}> {text}",
                "ts": ts,
                "channel": channel_id,
                "event_ts": ts,
                "team": team_id,
            },
        }
    )


def thread_message_body(
    text: str,
    *,
    team_id: str,
    user_id: str,
    thread_ts: str,
    channel_id: str = "C0PROJECTS",
    event_id: str | None = None,
    bot_user_id: str = "UBOT",
    **event_fields,
) -> str:
    """An Events API `message` callback for a reply in a thread (JSON); `event_fields` add or
    override fields of the event (`subtype`, `bot_id`)."""
    ts = f"{time.time():.6f}"
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": team_id,
            "api_app_id": "A0OPENCLAW",
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": bot_user_id, "is_bot": True}],
            "event": {
                "type": "message",
                "user": user_id,
                "text": text,
                "ts": ts,
                "thread_ts": thread_ts,
                "channel": channel_id,
                "channel_type": "channel",
                "event_ts": ts,
                "team": team_id,
                **event_fields,
            },
        }
    )


def block_action_body(
    action_id: str,
    value: str,
    *,
    team_id: str,
    user_id: str,
    channel_id: str = "C0PROJECTS",
    message_ts: str = "1.000001",
    thread_ts: str | None = None,
) -> str:
    """An interactivity `block_actions` payload for a button click (form-encoded `payload=`)."""
    return urlencode(
        {
            "payload": json.dumps(
                {
                    "type": "block_actions",
                    "api_app_id": "A0OPENCLAW",
                    "token": "legacy-verification-token",
                    "trigger_id": f"{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex[:12]}",
                    "team": {"id": team_id, "domain": "fake"},
                    "user": {"id": user_id, "team_id": team_id, "username": user_id.lower()},
                    "container": {
                        "type": "message",
                        "message_ts": message_ts,
                        "channel_id": channel_id,
                        "is_ephemeral": False,
                    },
                    "channel": {"id": channel_id, "name": "projects"},
                    "message": {
                        "type": "message",
                        "ts": message_ts,
                        "text": "status",
                        **({"thread_ts": thread_ts} if thread_ts else {}),
                    },
                    "response_url": "https://hooks.slack.com/actions/T0/1/abc",
                    "actions": [
                        {
                            "type": "button",
                            "action_id": action_id,
                            "block_id": "openclaw_actions",
                            "value": value,
                            "action_ts": f"{time.time():.6f}",
                            "text": {"type": "plain_text", "text": action_id},
                        }
                    ],
                }
            )
        }
    )
