"""Shared fixtures: the embedded Redis, real worker processes on the test database, config."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests import processes

ROOT = Path(__file__).resolve().parent.parent

# Workers in tests notice lost leases and lost messages within seconds, not minutes.
FAST_TIMINGS = {
    "OPENCLAW_LEASE_SEC": "6",  # renewed every 0.5 s: a loaded 2-core box can still miss a few
    "OPENCLAW_LEASE_RENEW_SEC": "0.5",
    "OPENCLAW_REQUEUE_AFTER_SEC": "8",
    "OPENCLAW_REAPER_INTERVAL_SEC": "0.25",
    "OPENCLAW_POOL_QUEUES_REFRESH_SEC": "0.5",
    # A gate that hangs fails a test in half a minute, not the product's two: time enough for twenty
    # gates at once on a loaded 2-core box (each loads FastAPI for the backend's API tests).
    "OPENCLAW_GATE_TIMEOUT_SEC": "30",
}


# The folder a test lives in is its kind; the markers follow the folders (`-m integration` selects
# tests/integration, `-m browser` tests/browser, `-m "not integration and not browser"` tests/unit).
FOLDER_MARKERS = {"integration": "integration", "browser": "browser"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        marker = FOLDER_MARKERS.get(folder)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
        for name in FOLDER_MARKERS.values():
            if name != marker and item.get_closest_marker(name):
                raise pytest.UsageError(f"{item.nodeid} is marked {name} but lives in tests/{folder}/")


@pytest.fixture(scope="session")
def redis_server():
    """The Redis the tests use: REDIS_URL, or the embedded server tests/env_plugin.py started."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.ping()
    return client


@pytest.fixture(autouse=True)
def _no_repositories_left_from_other_tests():
    """Projects' repositories live on disk, keyed by client id, which a new test database reuses."""
    shutil.rmtree(settings.OPENCLAW_REPOS_DIR, ignore_errors=True)
    yield


@pytest.fixture(autouse=True)
def _redis_for_every_test(request, redis_server):
    """Every test may publish events or enqueue messages; start each from an empty broker."""
    redis_server.flushdb()
    yield


def worker_env(extra: dict | None = None) -> dict:
    return processes.worker_env({**FAST_TIMINGS, **(extra or {})})


class Workers(processes.Workers):
    """Real worker processes and a reaper on the test database, with the tests' fast timings."""

    def __init__(self, threads: int = 12, env: dict | None = None):
        super().__init__(threads, {**FAST_TIMINGS, **(env or {})}, logs=settings.VAR_DIR / "test-logs")


@pytest.fixture
def workers(transactional_db, redis_server):
    running = Workers().start()
    yield running
    running.stop()


@pytest.fixture
def client_and_key(db):
    from executions.models import ApiKey, Client

    client = Client.objects.create(name="acme")
    _, raw = ApiKey.issue(client)
    return client, raw


def configure(
    *,
    latency: float = 0.2,
    codegen: int = 3,
    security: int = 2,
    database: int = 2,
    retries: int = 2,
    timeouts: dict | None = None,
    options: dict | None = None,
    backoff: float = 0.2,
    max_turns: int = 1,
) -> None:
    """Load config.json's shape with the offline model on every pool and the given limits. Agents
    answer in one reply unless `max_turns` allows their tool loop (tests of the loop ask for it)."""
    from executions.configuration import load_config

    timeouts = timeouts or {}
    offline = {
        "provider": "offline",
        "model": "openclaw-offline-1",
        "input_per_mtok": 3.0,
        "output_per_mtok": 15.0,
        "options": options or {},
    }
    pools = {
        name: {
            "max_concurrent": limit,
            "timeout_sec": timeouts.get(name, 60),
            "max_retries": retries,
            "model": "offline",
            "retry_backoff_sec": backoff,
            "offline_latency_sec": latency,
            "max_turns": max_turns,
        }
        for name, limit in (("codegen", codegen), ("security", security), ("database", database))
    }
    load_config(
        {
            "parallel_execution": {
                "enabled": True,
                "auto_fallback_to_serial": True,
                "pm": {"model": "offline"},
                "worker_pools": pools,
            },
            "models": {"offline": offline},
        },
        force=True,
    )


def wait_for_status(execution_id: str, statuses: set[str], timeout: float = 60):
    from executions.models import Execution

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = Execution.objects.get(pk=execution_id)
        if execution.status in statuses:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"{execution_id} still {execution.status} after {timeout}s")


def wait_for_running_attempt(execution_ids: list[str], timeout: float = 30) -> None:
    """Block until one of the executions has an attempt in flight (a moment to inject a fault)."""
    from executions.models import Attempt

    deadline = time.monotonic() + timeout
    while not Attempt.objects.filter(task__execution_id__in=execution_ids, status="running").exists():
        assert time.monotonic() < deadline, "no attempt started"
        time.sleep(0.05)


def restart_redis(down_sec: float = 1.0) -> None:
    """Restart the Redis this session uses: the embedded one, or this machine's server on 6379."""
    if os.environ.get("OPENCLAW_EMBEDDED_REDIS"):
        from tests import env_plugin

        env_plugin.restart_embedded_redis(down_sec)
        return
    assert settings.REDIS_URL.startswith("redis://127.0.0.1:6379"), "can only restart a local Redis"
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False)
    time.sleep(down_sec)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
    )
    time.sleep(0.5)
