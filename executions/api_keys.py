"""Clients' API keys: issue, revoke, rotate, and authenticate requests by them. Only a SHA-256 of a
key is stored; the raw key is returned once, to be shown once.

Wrong keys are counted per client IP (executions/throttling.py); past the limit every request
from that address that presents a key gets 429 with `Retry-After` until the window ends, without
the key being looked up. Keys are 256-bit random, so no per-key limit: it would only let anyone
who knows a key's prefix lock its client out.
"""

import logging

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import APIKeyHeader, HttpBearer

from .models import ApiKey, Client
from .throttling import API_KEY_FAILURES, client_ip

log = logging.getLogger("openclaw.security")


def api_key_issue(*, client: Client) -> tuple[ApiKey, str]:
    """A new key for the client: (the stored row, the raw key to hand over now)."""
    return ApiKey.issue(client)


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke a key; False when it already was."""
    return ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()) == 1


@transaction.atomic
def api_key_rotate(*, key: ApiKey) -> tuple[ApiKey, str]:
    """Revoke a key and issue its client a new one."""
    api_key_revoke(key=key)
    return api_key_issue(client=key.client)


def client_for_key(raw: str | None) -> Client | None:
    """The active client a raw key belongs to, or None (unknown, revoked, client deactivated)."""
    if not raw:
        return None
    key = (
        ApiKey.objects.select_related("client")
        .filter(key_hash=ApiKey.hash_key(raw), revoked_at__isnull=True)
        .first()
    )
    if key is None or not key.client.is_active:
        return None
    return key.client


class AuthFailuresThrottled(HttpError):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(429, f"Too many failed authentication attempts; retry in {retry_after} seconds.")


def auth_failures_throttled(request: HttpRequest, exc: AuthFailuresThrottled) -> JsonResponse:
    """The API's answer to AuthFailuresThrottled: 429 with Retry-After."""
    return JsonResponse({"detail": str(exc)}, status=429, headers={"Retry-After": str(exc.retry_after)})


def client_for_request_key(request: HttpRequest, raw: str | None) -> Client | None:
    """Authenticate a request by the key it presents, counting wrong keys against its address."""
    if not raw:
        return None  # no key: a plain 401, nothing guessed
    ip = client_ip(request)
    wait = API_KEY_FAILURES.retry_after(ip)
    if wait:
        raise AuthFailuresThrottled(wait)
    client = client_for_key(raw)
    if client is None:
        failures = API_KEY_FAILURES.hit(ip)
        log.warning("API key %r… refused from %s (%s failures this minute)", raw[:10], ip, failures)
    return client


class KeyHeader(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> Client | None:
        return client_for_request_key(request, key)


class Bearer(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Client | None:
        return client_for_request_key(request, token)


def _client_for_request_key_then_close(request: HttpRequest, raw: str | None) -> Client | None:
    try:
        return client_for_request_key(request, raw)
    finally:
        if not connection.in_atomic_block:
            connection.close()


# In the shared thread pool, not the request's own thread: a long-lived request (an event stream)
# then keeps neither a thread nor a database connection once authenticated.
_lookup_and_close = sync_to_async(_client_for_request_key_then_close, thread_sensitive=False)


class StreamKeyHeader(KeyHeader):
    """KeyHeader for async endpoints that stay open (event streams)."""

    async def authenticate(self, request: HttpRequest, key: str | None) -> Client | None:
        return await _lookup_and_close(request, key)


class StreamBearer(Bearer):
    """Bearer for async endpoints that stay open (event streams)."""

    async def authenticate(self, request: HttpRequest, token: str) -> Client | None:
        return await _lookup_and_close(request, token)
