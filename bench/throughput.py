"""Throughput: zero-latency agents, tasks per second through the whole engine, vs bare Dramatiq.

Engine: executions of seeded random DAGs (three pools, limits above the worker's thread count so
the pools never hold work back), every task a real attempt with its state transitions, events,
usage ledger entry and dispatches, then aggregation. Measured from the first task start to the
last task finish. Bare Dramatiq: the same number of no-op messages enqueued at once, first start
to last start.
"""

import time

import redis
from django.conf import settings

from . import harness
from .makespan import random_dag

POOLS = ("codegen", "security", "database")


def engine_tasks(client, executions: int, tasks_each: int, seed: int) -> dict:
    harness.configure(dict.fromkeys(POOLS, 32), options={"latency_rules": harness.latency_rules([0])})
    plans = [random_dag(tasks_each, seed + i, durations=(0,)) for i in range(executions)]
    started = time.monotonic()
    ids = [
        harness.execution_from_plan(
            client, plan, harness.durations_of(plan), message="throughput benchmark"
        ).pk
        for plan in plans
    ]
    statuses = harness.wait_terminal(ids, timeout=300)
    wall = time.monotonic() - started
    done = sum(1 for s in statuses.values() if s == "completed")
    first, last = harness.task_window(ids)
    total = executions * tasks_each
    return {
        "tasks": total,
        "executions_completed": done,
        "seconds": round(last - first, 2),
        "tasks_per_sec": round(total / (last - first), 1),
        "wall_incl_aggregation_sec": round(wall, 2),
    }


def bare_noops(count: int) -> dict:
    from . import bare

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(bare.RECORD_KEY)
    run = f"noop-{time.time()}"
    for i in range(count):
        bare.NOOPS[i % len(bare.NOOPS)].send(run, time.time())
    deadline = time.monotonic() + 120
    while client.llen(bare.RECORD_KEY) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    starts = [float(raw.decode().split()[3]) for raw in client.lrange(bare.RECORD_KEY, 0, -1)]
    seconds = max(starts) - min(starts)
    return {
        "tasks": len(starts),
        "seconds": round(seconds, 2),
        "tasks_per_sec": round(len(starts) / seconds, 1),
    }


def bandit_cost(samples: int = 5) -> float:
    """Median seconds of the bandit scan that verification runs on every attempt with Python output."""
    import statistics

    from pools.offline import backend_files
    from pools.verifiers.bandit_scan import run_bandit

    files = backend_files(["orders"], False)
    timings = []
    for _ in range(samples):
        started = time.monotonic()
        run_bandit(files)
        timings.append(time.monotonic() - started)
    return statistics.median(timings)


def run(ctx) -> dict:
    executions, tasks_each = (8, 25) if ctx.quick else (20, 25)
    client, _ = harness.bench_client()
    with harness.bare_workers():
        bare = bare_noops(executions * tasks_each * 4)
    with harness.engine_workers():
        engine = engine_tasks(client, executions, tasks_each, seed=7000)
    share = round(engine["tasks_per_sec"] / bare["tasks_per_sec"] * 100, 1)
    bandit_sec = bandit_cost()
    return {
        "title": "Throughput with zero-latency agents (tasks/s)",
        "columns": ["path", "tasks", "seconds", "tasks/s", "notes"],
        "rows": [
            [
                "bare Dramatiq no-op",
                bare["tasks"],
                bare["seconds"],
                bare["tasks_per_sec"],
                "enqueue all, first→last start",
            ],
            [
                "engine",
                engine["tasks"],
                engine["seconds"],
                engine["tasks_per_sec"],
                f"{executions} executions × {tasks_each} tasks, {engine['executions_completed']} completed; "
                f"{share}% of bare",
            ],
        ],
        "checks": [
            (
                "every execution completed",
                engine["executions_completed"] == executions,
                f"{engine['executions_completed']}/{executions}",
            )
        ],
        "data": {
            "bare": bare,
            "engine": engine,
            "engine_share_of_bare_pct": share,
            "bandit_scan_sec_median": round(bandit_sec, 3),
        },
        "notes": [
            f"agents answer with front-end files; an output with Python adds a bandit scan "
            f"(bandit in process): {bandit_sec * 1000:.0f} ms median here"
        ],
    }
