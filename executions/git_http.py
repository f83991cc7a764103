"""Clients clone their projects over git's smart HTTP protocol, read-only:
`git clone http://<host>/git/<project>.git`.

HTTP Basic auth: any user name, the client's API key as the password. No or wrong credentials get
401 with a `WWW-Authenticate` challenge (so git asks for them); a project of another client, or
none, is a 404; a push is a 403. The pack is made by `git upload-pack --stateless-rpc` (the
protocol's stateless form, as git's own http-backend runs it) over this host's copy of the
project's repository, and relayed to the client as it is made, in chunks (`UploadPack`): the web
process holds a chunk at a time however large the project, and the client receives from the
start. upload-pack frames the pack itself (side-band-64k when the client asks for it, as git does).
"""

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import zlib

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import projects, selectors
from .api_keys import AuthFailuresThrottled, client_for_request_key
from .models import Client

log = logging.getLogger("openclaw.git")

REALM = 'Basic realm="OpenClaw projects", charset="UTF-8"'
UPLOAD_PACK_TIMEOUT_SEC = 120  # the ref advertisement, and the request of a fetch read by upload-pack
PACK_DEADLINE_SEC = 3600  # a pack still being made after this is cut (a hung git)
CHUNK_BYTES = 64 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a fetch's wants and haves, decompressed
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin:/usr/local/bin"}


class Refused(Exception):
    def __init__(self, response: HttpResponse):
        self.response = response


def text_response(status: int, message: str, **headers) -> HttpResponse:
    return HttpResponse(
        message + "\n", status=status, content_type="text/plain; charset=utf-8", headers=headers
    )


def basic_password(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def authorized_client(request: HttpRequest) -> Client:
    try:
        client = client_for_request_key(request, basic_password(request))
    except AuthFailuresThrottled as exc:
        raise Refused(text_response(429, str(exc), **{"Retry-After": str(exc.retry_after)})) from None
    if client is None:
        raise Refused(
            text_response(
                401,
                "credentials required: any user name, your API key as the password",
                **{"WWW-Authenticate": REALM},
            )
        )
    return client


def project_repository(client: Client, name: str) -> str:
    """The path of the client's project's repository; a 404 for anyone else's, or none."""
    if projects.name_problem(name) or selectors.project_for_client(client, name) is None:
        raise Refused(text_response(404, "project not found"))
    try:
        return projects.materialize_refs(client.pk, name).path
    except projects.ProjectError as exc:
        log.error("repository of %s/%s unusable: %s", client.pk, name, exc)
        raise Refused(text_response(503, "the project's repository is unavailable")) from None


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def protocol(request: HttpRequest) -> dict:
    """The protocol version the client asks for (`Git-Protocol: version=2`), as git's own
    http-backend passes it on to upload-pack; none: the original protocol."""
    asked = request.META.get("HTTP_GIT_PROTOCOL", "")
    return {"GIT_PROTOCOL": "version=2"} if asked == "version=2" else {}


def upload_pack_command(repo_path: str, *args: str) -> list[str]:
    # Nothing the client sent is on it: the path is made from a validated project name.
    return [
        "git",
        "upload-pack",
        "--strict",
        f"--timeout={UPLOAD_PACK_TIMEOUT_SEC}",
        "--stateless-rpc",
        *args,
        repo_path,
    ]


def advertised_refs(repo_path: str, env: dict) -> bytes:
    done = subprocess.run(
        upload_pack_command(repo_path, "--advertise-refs"),
        capture_output=True,
        env={**GIT_ENV, **env},
        timeout=UPLOAD_PACK_TIMEOUT_SEC,
        check=False,
    )
    if done.returncode != 0:
        log.warning("git upload-pack failed on %s: %s", repo_path, done.stderr.decode(errors="replace")[:500])
    return done.stdout


class UploadPack:
    """A running `git upload-pack --stateless-rpc` answering one request: the request is fed to it
    from a thread (it may answer before it has read all of a long negotiation), its output is read
    a chunk at a time as the response is sent (`SyncUploadPack`, `AsyncUploadPack`). `close()`
    (Django calls it when the response ends, also when the client went away) stops it if it is
    still running."""

    def __init__(self, repo_path: str, request_body: bytes, env: dict):
        self.repo_path = repo_path
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (read and closed by close())
        self.process = subprocess.Popen(
            upload_pack_command(repo_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**GIT_ENV, **env},
            # Its own process group: pack-objects, its child, is stopped with it.
            start_new_session=True,
        )
        self.stopped = False
        self.finished = False  # its output ended
        self.lock = threading.Lock()
        threading.Thread(target=self.feed, args=(request_body,), daemon=True).start()
        self.deadline = threading.Timer(PACK_DEADLINE_SEC, self.stop, kwargs={"reason": "deadline"})
        self.deadline.daemon = True
        self.deadline.start()

    def feed(self, body: bytes) -> None:
        # git may stop reading at any point: it failed (logged when closed) or was stopped.
        try:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.process.stdin.write(body)
        finally:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()

    def read_chunk(self) -> bytes:
        try:
            chunk = self.process.stdout.read1(CHUNK_BYTES)
        except ValueError:  # closed: the response was closed meanwhile
            return b""
        self.finished = not chunk
        return chunk

    def stop(self, *, reason: str) -> None:
        with self.lock:
            if self.process.poll() is None and not self.stopped:
                self.stopped = True
                log.info("git upload-pack on %s stopped: %s", self.repo_path, reason)
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.killpg(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        self.deadline.cancel()
        if self.finished:
            with contextlib.suppress(subprocess.TimeoutExpired):  # then stopped just below
                self.process.wait(timeout=10)
        self.stop(reason="the response ended before the pack did")
        returncode = self.process.wait()
        self.process.stdout.close()
        if returncode != 0 and not self.stopped:
            self.stderr.seek(0)
            log.warning(
                "git upload-pack failed on %s: %s",
                self.repo_path,
                self.stderr.read(500).decode(errors="replace"),
            )
        self.stderr.close()


class SyncUploadPack(UploadPack):
    """Its output as an iterator, for WSGI."""

    def __iter__(self):
        while chunk := self.read_chunk():
            yield chunk


class AsyncUploadPack(UploadPack):
    """Its output as an async iterator, for ASGI (daphne): Django reads a sync iterator whole
    before sending any of it there. Each read waits in a worker thread, not in the event loop."""

    async def __aiter__(self):
        while chunk := await asyncio.to_thread(self.read_chunk):
            yield chunk


def decompressed(body: bytes, encoding: str) -> bytes:
    """The request body, decompressed as its Content-Encoding says, up to MAX_REQUEST_BYTES."""
    if encoding not in ("gzip", "deflate"):
        return body
    # HTTP's "deflate" is the zlib format; wbits 31 is gzip's.
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, MAX_REQUEST_BYTES)
    except zlib.error:
        raise Refused(text_response(400, "the request body does not decompress")) from None
    if inflater.unconsumed_tail:
        raise Refused(text_response(413, "the request is too large"))
    return data


def refusing(view):
    def wrapper(request: HttpRequest, name: str) -> HttpResponse:
        try:
            return view(request, name)
        except Refused as refused:
            return refused.response

    wrapper.__name__ = view.__name__
    return csrf_exempt(wrapper)


@refusing
@require_GET
def info_refs(request: HttpRequest, name: str) -> HttpResponse:
    client = authorized_client(request)
    service = request.GET.get("service", "")
    if service == "git-receive-pack":
        return text_response(403, "projects are read-only: a push is refused")
    if service != "git-upload-pack":
        return text_response(403, "only git's smart HTTP protocol is served (git 1.6.6 or later)")
    repo_path = project_repository(client, name)
    version = protocol(request)
    advertisement = advertised_refs(repo_path, version)
    # Version 2 starts with its capabilities; the original protocol with the service line.
    body = advertisement if version else pkt_line(b"# service=git-upload-pack\n") + b"0000" + advertisement
    return HttpResponse(
        body,
        content_type="application/x-git-upload-pack-advertisement",
        headers={"Cache-Control": "no-cache"},
    )


@refusing
@require_POST
def git_upload_pack(request: HttpRequest, name: str) -> StreamingHttpResponse:
    client = authorized_client(request)
    repo_path = project_repository(client, name)
    body = decompressed(request.body, request.META.get("HTTP_CONTENT_ENCODING", ""))
    serving = AsyncUploadPack if isinstance(request, ASGIRequest) else SyncUploadPack
    return StreamingHttpResponse(
        serving(repo_path, body, protocol(request)),
        content_type="application/x-git-upload-pack-result",
        headers={"Cache-Control": "no-cache"},
    )


@refusing
def git_receive_pack(request: HttpRequest, name: str) -> HttpResponse:
    authorized_client(request)
    return text_response(403, "projects are read-only: a push is refused")


urlpatterns = [
    path("<str:name>.git/info/refs", info_refs, name="git-info-refs"),
    path("<str:name>.git/git-upload-pack", git_upload_pack, name="git-upload-pack"),
    path("<str:name>.git/git-receive-pack", git_receive_pack, name="git-receive-pack"),
]
