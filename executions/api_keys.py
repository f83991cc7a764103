"""Clients' API keys: issue, revoke, rotate. Only a SHA-256 of a key is stored; the raw key is
returned once, to be shown once."""

from django.db import transaction
from django.utils import timezone

from .models import ApiKey, Client


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
