"""The benchmark environment: Redis, a fresh database, the real processes, and shared helpers.

`prepare()` runs before Django's settings are read: it points the run at var/bench/ (a fresh
SQLite file there unless DATABASE_URL is set) and starts an embedded Redis on a socket under a
temp dir unless REDIS_URL is set. Everything the engine does then happens in real processes:
`rundramatiq` workers and the reaper (tests.processes), daphne for the API, and a
bare Dramatiq worker (bench/bare.py) as the reference.
"""

import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
SQLITE_FILE = VAR / "bench.sqlite3"
# Dramatiq's Redis consumer sleeps up to this long (ms) between polls of an idle queue; the engine's
# settings choose it for its workers, and the bare reference gets the same value.
WORKER_TIMEOUT_ENV = "dramatiq_worker_timeout"
TERMINAL = {"completed", "partial", "failed", "cancelled", "budget_exceeded"}


class Environment:
    """What `prepare()` set up, torn down by `close()`."""

    def __init__(self) -> None:
        self.redis_process: subprocess.Popen | None = None
        self.redis_dir: str | None = None

    def close(self) -> None:
        if self.redis_process:
            self.redis_process.terminate()
            self.redis_process.wait(timeout=10)
        if self.redis_dir:
            shutil.rmtree(self.redis_dir, ignore_errors=True)


def prepare() -> Environment:
    """Choose database and Redis for this run (before django.setup())."""
    VAR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
    os.environ["OPENCLAW_VAR_DIR"] = str(VAR)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # As deployed: DEBUG off (no per-query bookkeeping); plain HTTP on loopback, so no TLS redirect.
    os.environ.setdefault("DEBUG", "False")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "False")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # a production start needs one
    env = Environment()
    shutil.rmtree(VAR / "logs", ignore_errors=True)
    (VAR / "logs").mkdir()
    if not os.environ.get("DATABASE_URL"):
        for suffix in ("", "-wal", "-shm", ".writer-lock"):
            Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
        os.environ["SQLITE_PATH"] = str(SQLITE_FILE)
    if not os.environ.get("REDIS_URL"):
        sys.path.insert(0, str(ROOT))
        from openclaw_site import embedded_redis

        env.redis_dir = tempfile.mkdtemp(prefix="openclaw-bench-")
        socket_path = Path(env.redis_dir) / "redis.sock"
        env.redis_process = embedded_redis.start(
            socket_path, data_dir=Path(env.redis_dir) / "data", appendonly=False
        )
        os.environ["REDIS_URL"] = f"unix://{socket_path}?db=0"
    return env


def setup_database() -> None:
    """Migrate, empty the broker (REDIS_URL's database is flushed) and leave the bench client. A
    PostgreSQL DATABASE_URL names a scratch database: created if missing, emptied if not."""
    import redis
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        created = create_missing_database(settings.DATABASES["default"])
        call_command("migrate", interactive=False, verbosity=0)
        if not created:
            call_command("flush", interactive=False, verbosity=0)
    else:
        call_command("migrate", interactive=False, verbosity=0)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def create_missing_database(database: dict) -> bool:
    """Create the PostgreSQL database the settings name if the server lacks it; whether it did."""
    import psycopg
    from psycopg import sql

    server = {
        "host": database["HOST"] or None,
        "port": database["PORT"] or None,
        "user": database["USER"] or None,
        "password": database["PASSWORD"] or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database["NAME"],)).fetchone():
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database["NAME"])))
    return True


# ---------------------------------------------------------------- processes


@contextlib.contextmanager
def engine_workers(env: dict | None = None, *, threads: int | None = None, processes: int | None = None):
    """`rundramatiq` + reaper on the bench database, with production timings (leases, reaper 1 s);
    as many processes and threads as `make run` unless told."""
    from django.conf import settings

    from tests.processes import Workers

    threads, processes = threads or settings.WORKER_THREADS, processes or settings.WORKER_PROCESSES

    known = heartbeats("openclaw")
    running = Workers(threads, env or {}, processes=processes, logs=VAR / "logs")
    running.start()
    try:
        # Heartbeats of the previous phase's workers linger: wait for this start's own.
        wait_for_new_heartbeats("openclaw", known, processes, running.workers)
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def bare_workers(env: dict | None = None, *, threads: int | None = None, processes: int | None = None):
    """A plain `dramatiq bench.bare` worker with the same process/thread counts and poll timeout."""
    from django.conf import settings

    from tests.processes import worker_env

    threads, processes = threads or settings.WORKER_THREADS, processes or settings.WORKER_PROCESSES

    known = heartbeats("bench-bare")
    log = open(VAR / "logs" / "bare.log", "ab")  # noqa: SIM115 (the child writes to it for its whole life)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.bare:BROKER",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--worker-shutdown-timeout",
            "2000",
        ],
        cwd=ROOT,
        env=worker_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_new_heartbeats("bench-bare", known, processes, process)
        yield process
    finally:
        stop_process_group(process)


def heartbeats(namespace: str) -> set[bytes]:
    """Broker ids of the Dramatiq worker processes that have polled Redis (new ones at every start)."""
    import redis
    from django.conf import settings

    return set(redis.Redis.from_url(settings.REDIS_URL).zrange(f"{namespace}:__heartbeats__", 0, -1))


def wait_for_new_heartbeats(
    namespace: str, known: set[bytes], processes: int, process: subprocess.Popen
) -> None:
    deadline = time.monotonic() + 30
    while len(heartbeats(namespace) - known) < processes:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dramatiq workers ({namespace}) did not start; see {VAR}/logs/")
        time.sleep(0.1)


@contextlib.contextmanager
def web_server(env: dict | None = None, *, processes: int = 1):
    """daphne serving the site on a free local port (`processes` of them on its one socket);
    yields the base URL and the daphne processes."""
    from tests.processes import Daphne, worker_env

    with Daphne(worker_env(env), VAR / "logs" / "web.log", processes=processes) as web:
        yield web.url, web.processes


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class PeakMemory(threading.Thread):
    """Samples the RSS of process trees (root + descendants) and keeps each group's peak sum."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 0.25):
        super().__init__(daemon=True)
        self.groups = groups
        self.interval = interval
        self.peak_mb = dict.fromkeys(groups, 0.0)
        self.stopped = threading.Event()

    def sample(self) -> None:
        import psutil

        for name, roots in self.groups.items():
            total = 0
            for pid in roots:
                try:
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_mb[name] = max(self.peak_mb[name], total / 2**20)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.join()
        self.sample()
        return {k: round(v, 1) for k, v in self.peak_mb.items()}


# ---------------------------------------------------------------- engine helpers


def configure(
    limits: dict[str, int],
    *,
    latency: float = 0.0,
    options: dict | None = None,
    prices: tuple[float, float] = (3.0, 15.0),
) -> None:
    """Every pool and the PM on the offline model, with the given limits and simulated latencies."""
    from executions.configuration import load_config

    offline = {
        "provider": "offline",
        "model": "openclaw-offline-1",
        "input_per_mtok": prices[0],
        "output_per_mtok": prices[1],
        "options": options or {},
    }
    pools = {
        name: {
            "max_concurrent": limit,
            "timeout_sec": 600,
            "max_retries": 2,
            "model": "offline",
            "retry_backoff_sec": 0.2,
            "offline_latency_sec": latency,
            "max_turns": 1,  # single replies: these benchmarks measure the scheduling, not the agents
        }
        for name, limit in limits.items()
    }
    load_config(
        {
            "parallel_execution": {
                "enabled": True,
                "auto_fallback_to_serial": True,
                "pm": {"model": "offline"},
                "max_tasks_per_plan": 500,
                "worker_pools": pools,
            },
            "models": {"offline": offline},
        },
        force=True,
    )


def staff_cookie(username: str) -> str:
    """A session cookie of a staff user, for the staff-only console websocket."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}"


def bench_client(name: str = "bench"):
    """The client the benchmarks run as, and a fresh API key of it."""
    from executions.models import ApiKey, Client

    client, _ = Client.objects.get_or_create(name=name)
    _, raw = ApiKey.issue(client)
    return client, raw


def duration_tag(seconds: float) -> str:
    """A description marker the offline latency rules match on, e.g. "[d=0.25]"."""
    return f"[d={seconds:g}]"


def durations_of(plan: list[dict]) -> dict[str, float]:
    """Each plan task's simulated seconds, read back from its duration tag."""
    return {t["id"]: float(t["description"].rsplit("[d=", 1)[1].rstrip("]")) for t in plan}


def latency_rules(durations) -> list[dict]:
    return [{"match": duration_tag(d), "latency_sec": d} for d in sorted(set(durations))]


def execution_from_plan(client, plan_tasks: list[dict], durations: dict[str, float], *, message: str):
    """An executing execution with these tasks, created through the engine's own services.

    Bypasses the PM (whose offline planner only knows the seed's work streams) so any DAG can run
    through the real scheduler; dispatch starts once the transaction commits.
    """
    from django.db import transaction
    from django.utils import timezone

    from executions import billing, events
    from executions.dispatch import dispatch_after_commit
    from executions.models import Execution, ExecutionStatus
    from executions.task_graph import create_tasks

    now = timezone.now()
    estimated_cost = billing.plan_cost_estimate(plan_tasks)
    with transaction.atomic():
        execution = Execution.objects.create(
            id=Execution.new_id("bench"),
            client=client,
            session_key="bench",
            message=message,
            requested_mode="parallel",
            mode="parallel",
            routing_reason="benchmark plan",
            status=ExecutionStatus.EXECUTING,
            plan={"tasks": plan_tasks},
            plan_source="model",
            started_at=now,
            phase_sent_at=now,
            estimated_cost_usd=estimated_cost,
        )
        billing.charge_fee(
            execution, billing.fee_for_plan(task_count=len(plan_tasks), estimated_cost=estimated_cost)
        )
        created = create_tasks(execution, plan_tasks, expected=durations, weights=durations)
        events.emit(execution.pk, "execution.planned", payload={"mode": "parallel", "tasks": len(created)})
        dispatch_after_commit(t.pool for t in created)
    return execution


def plan_task(
    key: str, pool: str, duration: float, blocked_by=(), priority: int = 1, label: str = "task"
) -> dict:
    """A plan task whose offline agent takes `duration` seconds.

    "frontend" makes the offline codegen agent answer with front-end files: no Python, so no
    bandit subprocess per attempt (its cost is measured on its own by the throughput benchmark)
    and the numbers are the engine's own.
    """
    return {
        "id": key,
        "pool": pool,
        "description": f"Bench {label} {key}: frontend pages {duration_tag(duration)}",
        "priority": priority,
        "timeout_sec": 600,
        "blocked_by": list(blocked_by),
        "soft_deps": [],
        "context": {},
    }


def wait_terminal(execution_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll until every execution is terminal (or the timeout passes); their statuses."""
    from executions.models import Execution

    deadline = time.monotonic() + timeout
    while True:
        statuses = dict(Execution.objects.filter(pk__in=execution_ids).values_list("id", "status"))
        if all(s in TERMINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.05)


def task_window(execution_ids: list[str]) -> tuple[float, float]:
    """(first task start, last task finish) as epoch seconds over the executions' tasks."""
    from django.db.models import Max, Min

    from executions.models import Task

    row = Task.objects.filter(execution_id__in=execution_ids).aggregate(
        first=Min("started_at"), last=Max("finished_at")
    )
    return row["first"].timestamp(), row["last"].timestamp()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def summary_ms(values_sec: list[float]) -> dict:
    if not values_sec:
        return {"n": 0}
    ms = [v * 1000 for v in values_sec]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }
