"""Dispatch overhead: a dependency finishes → the next task's agent starts, against bare Dramatiq.

Both sides run the same shape: chains whose links alternate over three queues (pools), each link
working `latency` seconds, several chains at once. Engine: a task's attempt start minus its
dependency's finish (commit, promote, dispatch under the pool lock, enqueue, consume, task_start).
Bare Dramatiq: an actor that sleeps, then enqueues the next link; next start minus previous end.
Pool limits are far above the load, so every wait measured is overhead, never a full pool.
Measured twice: with Dramatiq's default poll timeout (1000 ms) and with the engine's setting.
Each side first runs a few links that are not counted (see WARMUP_STEPS).
"""

import time

import redis
from django.conf import settings

from . import harness
from .harness import plan_task

POOLS = ("codegen", "security", "database")
# Chains run first on both sides and not counted: the steady state of a worker is measured, not
# its first moments (connections opened per thread, first queries).
WARMUP_STEPS = 3


def engine_chains(client, chains: int, steps: int, latency: float) -> list[float]:
    from executions.models import Attempt, Task

    harness.configure(dict.fromkeys(POOLS, 16), options={"latency_rules": harness.latency_rules([latency])})
    ids = []
    for _ in range(chains):
        plan = [plan_task(f"s{i:02d}", POOLS[i % 3], latency, [f"s{i - 1:02d}"] if i else [], label="chain link")
                for i in range(steps)]
        ids.append(harness.execution_from_plan(client, plan, {t["id"]: latency for t in plan},
                                               message="dispatch benchmark chain").pk)
    statuses = harness.wait_terminal(ids, timeout=60 + chains * steps * latency)
    assert all(s == "completed" for s in statuses.values()), statuses
    finished = {(t.execution_id, t.key): t.finished_at for t in Task.objects.filter(execution_id__in=ids)}
    samples = []
    for attempt in Attempt.objects.filter(task__execution_id__in=ids, number=1).select_related("task"):
        if attempt.task.blocked_by:
            dep = finished[(attempt.task.execution_id, attempt.task.blocked_by[0])]
            samples.append((attempt.started_at - dep).total_seconds())
    return samples


def bare_chains(chains: int, steps: int, latency: float) -> list[float]:
    from . import bare

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(bare.RECORD_KEY)
    run = f"chain-{time.time()}"
    for chain in range(chains):
        bare.CHAIN_STEPS[0].send(run, chain, 0, steps, latency, time.time())
    deadline = time.monotonic() + 60 + steps * latency
    while client.llen(bare.RECORD_KEY) < chains * steps and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = []
    for raw in client.lrange(bare.RECORD_KEY, 0, -1):
        kind, run_id, _chain, step, previous_end, started = raw.decode().split()
        if kind == "chain" and run_id == run and int(step) > 0:
            samples.append(float(started) - float(previous_end))
    return samples


def run(ctx) -> dict:
    # 6 × 30 = 180 samples per side, so that the p99 is not simply the largest one.
    chains, steps, latency = (4, 12, 0.2) if ctx.quick else (6, 31, 0.2)
    client, _ = harness.bench_client()
    rows, data = [], {"chains": chains, "steps": steps, "latency_sec": latency, "runs": {}}
    timeouts = [("dramatiq default", 1000), ("engine setting", ctx.worker_timeout_ms)]
    for label, timeout_ms in timeouts:
        env = {harness.WORKER_TIMEOUT_ENV: str(timeout_ms)}
        with harness.bare_workers(env):
            bare_chains(chains, WARMUP_STEPS, latency)
            bare = harness.summary_ms(bare_chains(chains, steps, latency))
        with harness.engine_workers(env):
            engine_chains(client, chains, WARMUP_STEPS, latency)
            engine = harness.summary_ms(engine_chains(client, chains, steps, latency))
        ratio = round(engine["p99_ms"] / bare["p99_ms"], 2) if bare.get("p99_ms") else None
        data["runs"][label] = {"worker_timeout_ms": timeout_ms, "bare": bare, "engine": engine, "p99_ratio": ratio}
        rows.append([f"{label} ({timeout_ms} ms poll)", "bare Dramatiq", bare["n"], bare["p50_ms"], bare["p99_ms"], ""])
        rows.append(["", "engine", engine["n"], engine["p50_ms"], engine["p99_ms"], f"{ratio}×"])
    final = data["runs"]["engine setting"]
    return {
        "title": "Dispatch overhead: dependency finished → agent started (ms)",
        "columns": ["poll timeout", "path", "samples", "p50", "p99", "p99 vs bare"],
        "rows": rows,
        "checks": [("engine p99 ≤ 2× bare Dramatiq p99", final["p99_ratio"] is not None and final["p99_ratio"] <= 2,
                    f"{final['p99_ratio']}×")],
        "data": data,
    }
