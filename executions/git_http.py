"""Clients clone their projects over git's smart HTTP protocol, read-only:
`git clone http://<host>/git/<project>.git`.

HTTP Basic auth: any user name, the client's API key as the password. No or wrong credentials get
401 with a `WWW-Authenticate` challenge (so git asks for them); a project of another client, or
none, is a 404; a push is a 403. The pack is made by `git upload-pack --stateless-rpc` (the
protocol's stateless form, as git's own http-backend runs it) over the project's bare repository.
"""

import base64
import binascii
import gzip
import logging
import subprocess
import zlib

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import projects, selectors
from .api_keys import AuthFailuresThrottled, client_for_request_key
from .models import Client

log = logging.getLogger("openclaw.git")

REALM = 'Basic realm="OpenClaw projects", charset="UTF-8"'
UPLOAD_PACK_TIMEOUT_SEC = 120
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


def upload_pack(repo_path: str, *args: str, stdin: bytes = b"", env: dict | None = None) -> bytes:
    done = subprocess.run(
        [
            "git",
            "upload-pack",
            "--strict",
            f"--timeout={UPLOAD_PACK_TIMEOUT_SEC}",
            "--stateless-rpc",
            *args,
            repo_path,
        ],
        input=stdin,
        capture_output=True,
        env={**GIT_ENV, **(env or {})},
        timeout=UPLOAD_PACK_TIMEOUT_SEC,
        check=False,
    )
    if done.returncode != 0:
        log.warning("git upload-pack failed on %s: %s", repo_path, done.stderr.decode(errors="replace")[:500])
    return done.stdout


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
    advertisement = upload_pack(repo_path, "--advertise-refs", env=version)
    # Version 2 starts with its capabilities; the original protocol with the service line.
    body = advertisement if version else pkt_line(b"# service=git-upload-pack\n") + b"0000" + advertisement
    return HttpResponse(
        body,
        content_type="application/x-git-upload-pack-advertisement",
        headers={"Cache-Control": "no-cache"},
    )


@refusing
@require_POST
def git_upload_pack(request: HttpRequest, name: str) -> HttpResponse:
    client = authorized_client(request)
    repo_path = project_repository(client, name)
    body = request.body
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "")
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
    except (OSError, zlib.error):
        return text_response(400, "the request body does not decompress")
    return HttpResponse(
        upload_pack(repo_path, stdin=body, env=protocol(request)),
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
