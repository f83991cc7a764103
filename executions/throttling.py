"""Throttling counted in Django's cache (Redis): failed API keys and sign-ins per client IP and
username, Slack requests per user.

A `RateLimit` counts hits per identity in fixed windows (one cache INCR per hit). A fixed window
says exactly when a refused identity may try again (the window's end, sent as `Retry-After`); a
burst across a window's edge can reach twice the limit, which still turns guessing from thousands
of tries a minute into a handful. Only failures are counted at the doors, so a client that
authenticates is never slowed; an identity over its limit is refused before any key or password
is checked, so the refusal tells a guesser nothing.
"""

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest

log = logging.getLogger("openclaw.security")

clock = time.time  # the windows' clock (tests set it)


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` hits per `period` seconds per identity; the limit is read from settings on use."""

    scope: str
    setting: str
    default: int
    period: int = 60

    @property
    def limit(self) -> int:
        return int(getattr(settings, self.setting, self.default))

    def _key(self, ident: str, now: float) -> str:
        # Hashed: identities are usernames and addresses, which need not be valid or short cache keys.
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return f"throttle:{self.scope}:{digest}:{int(now // self.period)}"

    def retry_after(self, ident: str) -> int:
        """Seconds until `ident` may try again; 0 while it is under the limit."""
        now = clock()
        if (cache.get(self._key(ident, now)) or 0) < self.limit:
            return 0
        return max(1, math.ceil(self.period - now % self.period))

    def hit(self, ident: str) -> int:
        """Count one hit for `ident`; the count in the current window."""
        key = self._key(ident, clock())
        cache.add(key, 0, timeout=self.period + 5)
        try:
            return cache.incr(key)
        except ValueError:  # the window's key expired between add and incr
            cache.set(key, 1, timeout=self.period + 5)
            return 1


API_KEY_FAILURES = RateLimit("api-key-failures", "OPENCLAW_AUTH_FAILURES_PER_MINUTE", 10)
LOGIN_FAILURES_BY_IP = RateLimit("login-failures-ip", "OPENCLAW_AUTH_FAILURES_PER_MINUTE", 10)
# Per username too: guesses spread over many addresses still meet a limit. The cost is that
# someone can keep one account's sign-in refused a minute at a time; the admin's password reset
# and other accounts are unaffected.
LOGIN_FAILURES_BY_USERNAME = RateLimit("login-failures-user", "OPENCLAW_AUTH_FAILURES_PER_MINUTE", 10)
SLACK_REQUESTS = RateLimit("slack-requests", "OPENCLAW_SLACK_REQUESTS_PER_MINUTE", 6)


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or with `OPENCLAW_NUM_PROXIES` trusted reverse proxies in
    front, the address the outermost of them saw (X-Forwarded-For entries further left are the
    client's own claims and are ignored, else each guess could pose as a new address)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = int(getattr(settings, "OPENCLAW_NUM_PROXIES", 0))
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    return hops[-min(proxies, len(hops))] if hops else remote


LOGIN_THROTTLED = "Too many failed sign-in attempts. Please wait %(seconds)s seconds and try again."


class LoginThrottleMixin:
    """For an AuthenticationForm: refuses to check the password while the client's IP or the
    username is over its failure limit, and counts wrong passwords against both."""

    def clean(self):
        request = getattr(self, "request", None)
        username = (self.cleaned_data.get("username") or "").strip().lower()
        identities = [(LOGIN_FAILURES_BY_USERNAME, username)]
        if request is not None:
            identities.append((LOGIN_FAILURES_BY_IP, client_ip(request)))
        identities = [(limit, ident) for limit, ident in identities if ident]
        wait = max((limit.retry_after(ident) for limit, ident in identities), default=0)
        if wait:
            log.warning("Sign-in for %r refused: too many failures (retry in %ss)", username, wait)
            raise ValidationError(LOGIN_THROTTLED, code="throttled", params={"seconds": wait})
        try:
            return super().clean()
        except ValidationError as error:
            if any(getattr(e, "code", None) == "invalid_login" for e in getattr(error, "error_list", [])):
                for limit, ident in identities:
                    limit.hit(ident)
            raise


def login_throttled(form_class: type[AuthenticationForm]) -> type[AuthenticationForm]:
    """The sign-in form `form_class` with failed attempts throttled."""
    return type(f"Throttled{form_class.__name__}", (LoginThrottleMixin, form_class), {"__module__": __name__})


# The admin's sign-in form: wired with `admin.site.login_form = AdminLoginForm`.
AdminLoginForm = login_throttled(AdminAuthenticationForm)
