"""`GET /healthz`: can this web process reach the database and Redis? 200, or 503 naming what failed.

It also says whether the agents' sandbox works here (pools/sandbox.py). The sandbox is optional:
without it the `run` tool answers that execution is unavailable, so it never turns the answer 503.
"""

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pools import sandbox


def database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True, "ok"
    except Exception as exc:  # any driver error means "not healthy", with its reason
        return False, f"{type(exc).__name__}: {exc}"[:300]


def redis_ok() -> tuple[bool, str]:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return True, "ok"
    except (redis.RedisError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]


def sandbox_status() -> dict:
    available, detail = sandbox.availability()
    return {"available": True, "version": detail} if available else {"available": False, "reason": detail}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": database_ok(), "redis": redis_ok()}
    healthy = all(ok for ok, _ in checks.values())
    body = {
        "status": "ok" if healthy else "unhealthy",
        "checks": {name: detail for name, (_, detail) in checks.items()},
        "failed": [name for name, (ok, _) in checks.items() if not ok],
        "sandbox": sandbox_status(),
    }
    return JsonResponse(body, status=200 if healthy else 503)
