"""Worker processes' interpreter settings."""

import os
import subprocess
import sys

import pytest

from openclaw_site.worker_tuning import GilSwitchInterval


def test_a_worker_boots_with_the_configured_gil_switch_interval(settings):
    settings.WORKER_GIL_SWITCH_INTERVAL_MS = 1.0
    before = sys.getswitchinterval()
    try:
        GilSwitchInterval().before_worker_boot(broker=None, worker=None)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)


def boot_in_a_fresh_interpreter(script: str) -> subprocess.CompletedProcess:
    """Run `script` as a worker process's boot would, in an interpreter of its own."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "openclaw_site.settings"},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_worker_and_every_thread_it_starts_run_below_the_web_tiers_priority():
    script = (
        "import os, threading, django; django.setup()\n"
        "from django.conf import settings\n"
        "settings.WORKER_NICE = 5\n"
        "start = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "from openclaw_site.worker_tuning import WorkerPriority\n"
        "WorkerPriority().before_worker_boot(broker=None, worker=None)\n"
        "seen = []\n"
        "thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))\n"
        "thread.start(); thread.join()\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0) - start, seen[0] - start)\n"
    )
    assert boot_in_a_fresh_interpreter(script).stdout.split("\n")[-2] == "5 5"


def test_a_worker_loads_the_agent_code_and_starts_its_verifiers_children_before_it_consumes():
    """In a fresh interpreter, as a worker process boots: the actors bring the agent code, the
    warm-up starts the fork server bandit's scans come from (pools/verifiers/bandit_scan.py), loads
    sqlglot's PostgreSQL dialect and starts the scratch SQLite child (pools/verifiers/schema.py),
    before any message is consumed. bandit itself is never loaded into the worker."""
    script = (
        "import logging, sys, django, psutil; django.setup()\n"
        "logging.basicConfig(level=logging.INFO)\n"  # as dramatiq's worker processes log
        "import executions.actors\n"
        "from pools.verifiers.scratch_sqlite import scratch_child_pid\n"
        "MODULES = ('executions.agent_attempt', 'bandit.core.manager', 'sqlglot.dialects.postgres')\n"
        "def fork_servers():\n"
        "    return [c for c in psutil.Process().children() if 'forkserver' in ' '.join(c.cmdline())]\n"
        "def scratch_children():\n"
        "    return [c for c in psutil.Process().children() if c.pid == scratch_child_pid()]\n"
        "before = {m for m in MODULES if m in sys.modules}\n"
        "print(sorted(before), len(fork_servers()), len(scratch_children()))\n"
        "from openclaw_site.worker_tuning import WarmAgentCode\n"
        "WarmAgentCode().before_worker_boot(broker=None, worker=None)\n"
        "after = {m for m in MODULES if m in sys.modules}\n"
        "print(sorted(after), len(fork_servers()), len(scratch_children()))\n"
    )
    done = boot_in_a_fresh_interpreter(script)
    assert done.stdout.split("\n")[-3:] == [
        "['executions.agent_attempt'] 0 0",
        "['executions.agent_attempt', 'sqlglot.dialects.postgres'] 1 1",
        "",
    ]
    assert "Could not load" not in done.stderr  # bandit's optional formatters are not an error at boot


def test_a_worker_keeps_its_database_connection_from_one_message_to_the_next(transactional_db):
    """Between messages, django_dramatiq's DbConnectionsMiddleware closes connections past their
    CONN_MAX_AGE. On SQLite a worker thread keeps its connection (a new one costs about 0.8 ms of
    CPU per message); on PostgreSQL it hands it back to the process's pool, and the next message
    takes a pooled one: no new connection either way."""
    from django import db
    from django_dramatiq.middleware import DbConnectionsMiddleware

    from executions.models import Task

    middleware = DbConnectionsMiddleware()
    middleware.before_process_message(None, None)
    Task.objects.exists()
    first = db.connection.connection
    pool = db.connection.pool if db.connection.vendor == "postgresql" else None
    made = pool.get_stats()["connections_num"] if pool else None
    middleware.after_process_message(None, None)
    if pool:
        assert db.connection.connection is None  # back in the pool, not open beside it
    middleware.before_process_message(None, None)
    Task.objects.exists()
    if pool:
        assert pool.get_stats()["connections_num"] == made
    else:
        assert db.connection.connection is first


def test_postgresql_connections_come_from_a_bounded_pool_per_process(settings):
    """daphne runs each concurrent request in a thread of its own: kept connections grew with them
    until PostgreSQL refused clients (the scale benchmark on PostgreSQL). Built from DATABASE_URL."""
    import environ

    from openclaw_site import settings as project_settings

    env = environ.Env()
    db = project_settings._postgresql_pool(env.db_url_config("postgres://u@db.example:5432/openclaw"))
    assert db["CONN_MAX_AGE"] == 0 and db["CONN_HEALTH_CHECKS"] is True
    assert db["OPTIONS"]["pool"]["max_size"] == 20


def test_a_booted_worker_process_leaves_its_startup_objects_out_of_full_collections():
    """In a fresh interpreter, as a worker process boots: what it loaded is frozen, so a full
    collection has only what came after to walk."""
    script = (
        "import gc, django; django.setup()\n"
        "import executions.actors, bots.actors\n"
        "from openclaw_site.worker_tuning import FreezeStartupObjects, WarmAgentCode\n"
        "WarmAgentCode().before_worker_boot(broker=None, worker=None)\n"
        "tracked = len(gc.get_objects())\n"
        "FreezeStartupObjects().before_worker_boot(broker=None, worker=None)\n"
        "print(tracked, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    done = boot_in_a_fresh_interpreter(script)
    tracked, frozen, left = map(int, done.stdout.split())
    assert tracked > 50_000 and frozen > 0.9 * tracked and left < 0.05 * tracked


def test_the_worker_middleware_freezes_last(settings):
    """Frozen after the agent code is loaded and the warm-up scan ran, whose objects would
    otherwise stay in reach."""
    middleware = settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    assert middleware[-1] == "openclaw_site.worker_tuning.FreezeStartupObjects"
    assert middleware.index("openclaw_site.worker_tuning.WarmAgentCode") < len(middleware) - 1
