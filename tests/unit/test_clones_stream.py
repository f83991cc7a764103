"""A clone's pack goes out as git makes it: through Django's ASGI handler (what daphne runs), the
first chunk is sent while `git upload-pack` is still writing the rest, the web process holds a
chunk at a time, and a client that goes away stops git."""

import asyncio
import base64
import os
import tracemalloc
from pathlib import Path

import pytest
from django.core.asgi import get_asgi_application

from executions import git_http, projects
from tests.factories import incompressible_text, make_client, make_project

PACK_AT_LEAST = 3 * 1024 * 1024  # far more than the pipes between git and the relay hold


def running_upload_packs() -> list[int]:
    """This process's children running `git upload-pack` (not yet exited)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and b"upload-pack" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def big_project(settings, tmp_path, transactional_db):
    """A project of ~4.5 MB of text that does not compress, this host's copy already synced (the
    sync's own reads are not what is measured here); the request that fetches its head."""
    settings.OPENCLAW_REPOS_DIR = tmp_path / "repos"
    client, key = make_client()
    head = make_project(
        client, "big", {f"data/part-{n}.txt": incompressible_text(n, 768 * 1024) for n in range(6)}
    )
    projects.materialize_refs(client.pk, "big")
    want = git_http.pkt_line(f"want {head} side-band-64k ofs-delta\n".encode())
    return key, want + b"0000" + git_http.pkt_line(b"done\n")


def scope_for(path: str, key: str, method: str = "POST") -> dict:
    auth = base64.b64encode(f"anyone:{key}".encode())
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"service=git-upload-pack" if method == "GET" else b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", b"Basic " + auth),
            (b"content-type", b"application/x-git-upload-pack-request"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class SideBand:
    """Reads the response as the client does, without keeping it: pkt-lines, band 1 the pack."""

    def __init__(self):
        self.buffer = b""
        self.pack_bytes = 0
        self.pack_start = b""
        self.longest = 0
        self.flushed = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            length = int(self.buffer[:4], 16)
            if length == 0:
                self.flushed, self.buffer = True, self.buffer[4:]
                continue
            if len(self.buffer) < length:
                return
            line, self.buffer = self.buffer[4:length], self.buffer[length:]
            self.longest = max(self.longest, length)
            if line[:1] == b"\x01":
                if not self.pack_bytes:
                    self.pack_start = line[1:5]
                self.pack_bytes += len(line) - 1


async def serve(scope: dict, body: bytes, on_body) -> list[dict]:
    """One request through Django's ASGI handler; `on_body(message)` sees each body message as it
    is sent and may answer True: the client goes away then."""
    handler = get_asgi_application()
    gone = asyncio.Event()
    started: list[dict] = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            started.append(message)
        elif on_body(message):
            gone.set()

    await handler(scope, receive, send)
    return started


async def test_the_first_chunk_of_a_clone_is_sent_while_git_still_makes_the_pack(big_project):
    key, request = big_project
    band = SideBand()
    running_at_first_chunk: list[list[int]] = []

    def on_body(message):
        if message.get("body") and not running_at_first_chunk:
            running_at_first_chunk.append(running_upload_packs())
        band.feed(message.get("body", b""))

    [start] = await serve(scope_for("/git/big.git/git-upload-pack", key), request, on_body)

    assert start["status"] == 200
    assert running_at_first_chunk[0], "the first chunk came after git upload-pack had finished"
    assert band.pack_start == b"PACK" and band.pack_bytes > PACK_AT_LEAST and band.flushed
    assert band.longest <= 65520  # side-band-64k, as the client asked
    assert running_upload_packs() == []


async def test_the_web_process_holds_a_chunk_at_a_time_of_a_large_pack(big_project):
    key, request = big_project
    band = SideBand()
    # One request first: what a first request loads (URL patterns, modules) is not what is measured.
    await serve(scope_for("/git/big.git/info/refs", key, "GET"), b"", lambda message: None)
    tracemalloc.start()
    try:
        await serve(
            scope_for("/git/big.git/git-upload-pack", key), request, lambda m: band.feed(m.get("body", b""))
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert band.pack_bytes > PACK_AT_LEAST
    assert peak < band.pack_bytes / 3, f"peak {peak} bytes while relaying a pack of {band.pack_bytes}"


async def test_a_client_that_goes_away_mid_clone_stops_git(big_project):
    key, request = big_project
    band = SideBand()

    def on_body(message):
        band.feed(message.get("body", b""))
        return band.pack_bytes > 0  # gone once the pack has started

    await serve(scope_for("/git/big.git/git-upload-pack", key), request, on_body)
    assert 0 < band.pack_bytes < PACK_AT_LEAST
    assert running_upload_packs() == []
