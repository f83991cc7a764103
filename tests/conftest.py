"""Shared fixtures: the embedded Redis, real worker processes on the test database, config."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings


ROOT = Path(__file__).resolve().parent.parent

# Workers in tests notice lost leases and lost messages within seconds, not minutes.
FAST_TIMINGS = {
    "OPENCLAW_LEASE_SEC": "3",
    "OPENCLAW_LEASE_RENEW_SEC": "0.5",
    "OPENCLAW_REQUEUE_AFTER_SEC": "8",
    "OPENCLAW_REAPER_INTERVAL_SEC": "0.25",
}


@pytest.fixture(scope="session")
def redis_server():
    """The Redis the tests use: REDIS_URL, or the embedded server tests/env_plugin.py started."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.ping()
    return client


@pytest.fixture(autouse=True)
def _redis_for_every_test(request, redis_server):
    """Every test may publish events or enqueue messages; start each from an empty broker."""
    redis_server.flushdb()
    yield


def worker_env(extra: dict | None = None) -> dict:
    from django.db import connection

    env = dict(os.environ, **FAST_TIMINGS, PYTHONUNBUFFERED="1")
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
        env.pop("DATABASE_URL", None)
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra or {})
    return env


class Workers:
    """Real `rundramatiq` worker processes and a reaper, against the test database."""

    def __init__(self, threads: int = 12, env: dict | None = None):
        self.env = worker_env(env)
        self.threads = threads
        self.logs = settings.VAR_DIR / "test-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.workers: subprocess.Popen | None = None
        self.reaper: subprocess.Popen | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "Workers":
        self.start_workers()
        self.reaper = self._spawn("reaper", ["reaper"])
        return self

    def start_workers(self) -> None:
        self.workers = self._spawn("workers", ["rundramatiq", "--processes", "1", "--threads", str(self.threads),
                                               "--worker-shutdown-timeout", "2000"])
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """The worker is ready once it has registered its heartbeat in Redis."""
        client = redis.Redis.from_url(settings.REDIS_URL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(client.scan_iter("openclaw:__heartbeats__*")) or any(client.scan_iter("*heartbeats*")):
                return
            if self.workers.poll() is not None:
                raise RuntimeError(f"workers exited early; see {self.logs}/workers.log")
            time.sleep(0.1)
        raise RuntimeError("workers did not start")

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the dramatiq main process)."""
        out = subprocess.run(["pgrep", "-P", str(self.workers.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_workers(self, sig=signal.SIGKILL) -> None:
        os.killpg(self.workers.pid, sig)
        self.workers.wait(timeout=10)

    def stop(self) -> None:
        for process in (self.workers, self.reaper):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.workers, self.reaper):
            if process:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


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


def configure(*, latency: float = 0.2, codegen: int = 3, security: int = 2, database: int = 2, retries: int = 2,
              timeouts: dict | None = None, options: dict | None = None, backoff: float = 0.2) -> None:
    """Load config.json's shape with the offline model on every pool and the given limits."""
    from pools.config_io import load_config

    timeouts = timeouts or {}
    offline = {"provider": "offline", "model": "openclaw-offline-1", "input_per_mtok": 3.0, "output_per_mtok": 15.0,
               "options": options or {}}
    pools = {
        name: {"max_concurrent": limit, "timeout_sec": timeouts.get(name, 60), "max_retries": retries,
               "model": "offline", "retry_backoff_sec": backoff, "offline_latency_sec": latency}
        for name, limit in (("codegen", codegen), ("security", security), ("database", database))
    }
    load_config({"parallel_execution": {"enabled": True, "auto_fallback_to_serial": True,
                                        "pm": {"model": "offline"}, "worker_pools": pools},
                 "models": {"offline": offline}}, force=True)


def wait_for_status(execution_id: str, statuses: set[str], timeout: float = 60):
    from executions.models import Execution

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = Execution.objects.get(pk=execution_id)
        if execution.status in statuses:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"{execution_id} still {execution.status} after {timeout}s")
