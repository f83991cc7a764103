"""Requests to URLs that clients choose (webhooks): where they may go, and a POST that goes exactly
there.

A client-chosen URL is a way into our own network (SSRF). `check_url` resolves the host and
refuses the URL unless every address it resolves to is public; private, loopback, link-local and
other non-global addresses are allowed only with `allow_private` (local development, a receiver
on the same network), and cloud metadata addresses never. `post` then connects to one of the
addresses that were checked, not to whatever the name resolves to a moment later (DNS
rebinding), sends the Host header and TLS server name of the URL, and never follows a redirect:
a 3xx is just the answer, so a redirect cannot lead anywhere the check did not allow.
"""

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import storable

# Cloud metadata services answer with credentials: refused even where private targets are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
RESPONSE_EXCERPT_BYTES = 2000
USER_AGENT = "OpenClaw-Webhooks/1.0"


class UnsafeTarget(ValueError):
    """The URL may not be called: its scheme, its form, or where its host resolves to."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`addresses`, every one allowed) and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all (see `error`)
    excerpt: str = ""
    error: str = ""
    location: str = ""
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) says nothing more
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def address_problem(text: str, *, allow_private: bool) -> str | None:
    """Why a resolved address may not be called ("is a loopback address"), or None when it may."""
    address = _address(text)
    if address in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return "is not a host"
    if not address.is_global and not allow_private:
        kind = (
            "loopback"
            if address.is_loopback
            else "link-local"
            if address.is_link_local
            else "private"
            if address.is_private
            else "not public"
        )
        return f"is a {kind} address"
    return None


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTarget(f"{host} does not resolve: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url(url: str, *, allow_private: bool) -> Target:
    """The URL as a Target to `post` to, or UnsafeTarget saying why it may not be called.

    https always; plain http only with `allow_private`, and only to a non-public address (a
    receiver on this machine or network: over the internet a webhook travels encrypted)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeTarget("the URL must start with https://")
    if scheme == "http" and not allow_private:
        raise UnsafeTarget("the URL must use https (http only for a local receiver in development)")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("credentials in the URL are not supported")
    port = port or (443 if scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise UnsafeTarget(f"{host} does not resolve")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            shown = _address(address)
            raise UnsafeTarget(
                f"{shown} {problem}" if host == address else f"{host} resolves to {shown}, which {problem}"
            )
    if scheme == "http" and any(_address(a).is_global for a in addresses):
        raise UnsafeTarget("the URL must use https (http only for a local receiver in development)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the checked address; TLS checks the certificate against the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST `body` to the checked target (its addresses in turn until one connects); never follows
    a redirect. Network errors and timeouts are an Answer without a status, never an exception."""
    started = time.monotonic()
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    error = ""
    for address in target.addresses:
        connection = connection_class(target.host, target.port, address, timeout)
        try:
            connection.request(
                "POST",
                target.path,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            )
            response = connection.getresponse()
            # The receiver's words are kept with the delivery: storable, whatever it sent.
            excerpt = storable.decode(response.read(RESPONSE_EXCERPT_BYTES))
            return Answer(
                status=response.status,
                excerpt=excerpt,
                location=storable.storable(response.getheader("Location", ""))[:500],
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        except (OSError, http.client.HTTPException) as exc:
            error = storable.storable(f"{type(exc).__name__}: {exc}")[:300]  # may quote the receiver
            if isinstance(exc, (TimeoutError, socket.timeout)) or time.monotonic() - started > timeout:
                break  # a receiver that hangs is not tried again at another address
        finally:
            connection.close()
    return Answer(status=None, error=error, duration_ms=int((time.monotonic() - started) * 1000))
