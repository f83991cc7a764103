"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that records every request and
answers with the statuses it is scripted with, checking each request's signature and timestamp
the way a client's server should (the README's example)."""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SEC = 300


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """What a receiver does with X-OpenClaw-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > TOLERANCE_SEC:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    status: int
    signature_ok: bool | None = None

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """`statuses`: the answers, in order (the last one repeats); `secret`: checks signatures."""

    statuses: list[int] = field(default_factory=lambda: [200])
    secret: str | None = None
    headers: dict = field(default_factory=dict)  # extra response headers (Location for a redirect)
    body: bytes = b"ok"  # the answer's body
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    index = len(receiver.received)
                    status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                    signature = self.headers.get("X-OpenClaw-Signature", "")
                    receiver.received.append(
                        Received(
                            self.path,
                            dict(self.headers),
                            body,
                            status,
                            verify(receiver.secret, signature, body) if receiver.secret else None,
                        )
                    )
                    receiver.arrived.notify_all()
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} webhook(s) arrived, not {count}, in {timeout}s")
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
