"""Makespan against the lower bound, rank vs FIFO dispatch, on the real engine.

The lower bound is max(critical path, max over pools of work / max_concurrent)
(executions.parallel_executor.lower_bound). Makespan is measured from the run: the first task's
start to the last task's finish; the execution's own duration (planned → finished, aggregation
included) is reported next to it.

- The seed's restaurant DAG goes through the whole front door (execution_create → the offline PM
  → the router), with the seed's latencies scaled down ×100: frontend 0.6 s, backend 0.9 s,
  database 0.45 s, security 1.2 s.
- Seeded random DAGs of 20–200 tasks over three pools with the config's limits (3/2/2) are created
  directly through the engine's services (harness.execution_from_plan), since the offline PM only
  knows the seed's work streams.

Each DAG runs twice: with the rank rule, then with FIFO (ready order: the bench-only
OPENCLAW_DISPATCH_ORDER=fifo, given to the workers, the reaper and this process). The
list-schedule predictions (simulate_makespan, policy "rank" and "fifo") are shown next to the runs.
"""

import random

from django.test import override_settings

from . import harness
from .harness import plan_task

LIMITS = {"codegen": 3, "security": 2, "database": 2}
POOL_WEIGHTS = {"codegen": 0.5, "security": 0.25, "database": 0.25}
DURATIONS = tuple(round(0.3 + 0.05 * i, 2) for i in range(15))  # 0.3 … 1.0 s: the seed's agents ÷100
RESTAURANT = "Build a restaurant website with online booking and secure payments"
# Matched on the offline planner's stream descriptions (the request's own words follow a colon).
SEED_LATENCIES = [
    {"match": "next.js frontend", "latency_sec": 0.6},
    {"match": "fastapi backend", "latency_sec": 0.9},
    {"match": "database schema", "latency_sec": 0.45},
    {"match": "security audit (", "latency_sec": 1.2},
]


def random_dag(n: int, seed: int, durations=DURATIONS) -> list[dict]:
    """A layered random DAG: each task waits on 0–3 of the tasks shortly before it."""
    rng = random.Random(seed)
    pools, weights = zip(*POOL_WEIGHTS.items())
    window = max(3, int(n**0.5) * 2)
    tasks = []
    for i in range(n):
        earlier = list(range(max(0, i - window), i))
        deps = sorted(rng.sample(earlier, min(len(earlier), rng.choice((0, 1, 1, 2, 2, 3)))))
        tasks.append(
            plan_task(
                f"t{i:03d}",
                rng.choices(pools, weights)[0],
                rng.choice(durations),
                [f"t{d:03d}" for d in deps],
                label="random",
            )
        )
    return tasks


def nodes_of(plan: list[dict], durations: dict[str, float]):
    from executions.dag import PlanNode

    return [
        PlanNode(t["id"], t["pool"], durations[t["id"]], t["priority"], tuple(t["blocked_by"])) for t in plan
    ]


def predictions(plan: list[dict], durations: dict[str, float]) -> dict:
    from executions.dag import lower_bound, simulate_makespan

    nodes = nodes_of(plan, durations)
    return {
        "lower_bound": lower_bound(nodes, LIMITS),
        "sim_rank": simulate_makespan(nodes, LIMITS, policy="rank"),
        "sim_fifo": simulate_makespan(nodes, LIMITS, policy="fifo"),
    }


def measured(execution_id: str) -> dict:
    """The run's makespan, and the lower bound recomputed from the tasks' actual durations.

    An attempt takes its model latency plus the worker's own work on it (verification: bandit,
    schema checks); the second bound holds that fixed, so its ratio is the scheduler's share alone.
    """
    from executions.dag import PlanNode, lower_bound
    from executions.models import Execution, Task

    execution = Execution.objects.get(pk=execution_id)
    first, last = harness.task_window([execution_id])
    tasks = list(Task.objects.filter(execution_id=execution_id))
    nodes = [
        PlanNode(
            t.key, t.pool, (t.finished_at - t.started_at).total_seconds(), t.priority, tuple(t.blocked_by)
        )
        for t in tasks
    ]
    return {
        "status": execution.status,
        "tasks": len(tasks),
        "makespan": round(last - first, 3),
        "duration": execution.duration_sec,
        "actual_bound": round(lower_bound(nodes, LIMITS), 3),
    }


def run_seed_dag(client) -> tuple[dict, dict]:
    from executions.models import Task
    from executions.services import execution_create

    execution = execution_create(client=client, message=RESTAURANT, session_key="bench", mode="parallel")
    harness.wait_terminal([execution.pk], timeout=60)
    tasks = list(Task.objects.filter(execution=execution))
    plan = [{"id": t.key, "pool": t.pool, "priority": t.priority, "blocked_by": t.blocked_by} for t in tasks]
    return measured(execution.pk), predictions(plan, {t.key: t.expected_sec for t in tasks})


def run_random_dag(client, plan: list[dict]) -> dict:
    durations = harness.durations_of(plan)
    execution = harness.execution_from_plan(
        client, plan, durations, message=f"random DAG of {len(plan)} tasks"
    )
    harness.wait_terminal([execution.pk], timeout=120)
    return measured(execution.pk)


def run(ctx) -> dict:
    sizes = (20, 60) if ctx.quick else (20, 200)
    dags = {f"random n={n} seed={n * 31}": random_dag(n, n * 31) for n in sizes}
    client, _ = harness.bench_client()
    options = {"latency_rules": SEED_LATENCIES + harness.latency_rules(DURATIONS), "pm_latency_sec": 0.0}
    harness.configure(LIMITS, options=options)
    runs: dict[str, dict] = {}
    for order in ("rank", "fifo"):
        with (
            override_settings(OPENCLAW_DISPATCH_ORDER=order),
            harness.engine_workers({"OPENCLAW_DISPATCH_ORDER": order}),
        ):
            seed_run, seed_prediction = run_seed_dag(client)
            runs.setdefault("seed restaurant DAG", {"prediction": seed_prediction})[order] = seed_run
            for name, plan in dags.items():
                entry = runs.setdefault(name, {"prediction": predictions(plan, harness.durations_of(plan))})
                entry[order] = run_random_dag(client, plan)
    rows, checks = [], []
    for name, entry in runs.items():
        bound = entry["prediction"]["lower_bound"]
        for order in ("rank", "fifo"):
            got = entry[order]
            got["ratio"] = round(got["makespan"] / bound, 3)
            got["ratio_actual"] = round(got["makespan"] / got["actual_bound"], 3)
        target = 1.05 if name.startswith("seed") else 1.15
        rank, fifo = entry["rank"], entry["fifo"]
        rows.append(
            [
                name,
                f"{bound:.2f}",
                f"{entry['prediction']['sim_rank'] / bound:.3f}",
                f"{entry['prediction']['sim_fifo'] / bound:.3f}",
                rank["makespan"],
                rank["ratio"],
                f"{rank['actual_bound']:.2f}",
                rank["ratio_actual"],
                fifo["ratio"],
                fifo["ratio_actual"],
                rank["duration"],
                f"{rank['status']} ({rank['tasks']} tasks)",
            ]
        )
        checks.append(
            (
                f"{name}: rank makespan / bound of the actual durations ≤ {target}",
                rank["ratio_actual"] <= target,
                rank["ratio_actual"],
            )
        )
    return {
        "title": "Makespan / lower bound (rank rule vs FIFO; simulated and measured)",
        "columns": [
            "DAG",
            "bound s",
            "sim rank",
            "sim fifo",
            "rank makespan s",
            "rank ratio",
            "actual bound s",
            "rank ratio (actual)",
            "fifo ratio",
            "fifo ratio (actual)",
            "execution s",
            "status",
        ],
        "rows": rows,
        "checks": checks,
        "data": {"limits": LIMITS, "durations": list(DURATIONS), "runs": runs},
        "notes": [
            "ratio = measured makespan / lower bound from the model latencies; (actual) = / lower bound "
            "from each task's measured duration (latency + the worker's verification), i.e. the "
            "scheduler's and dispatch's share alone",
            "'sim' = simulate_makespan's list-schedule prediction / bound; execution s = planned → "
            "finished (aggregation and synthesis included), rank run",
        ],
    }
