"""The agent loop: the engine's own time per turn (the sandbox's is bench/sandbox.py's).

Offline agents with
no model latency working a 10-turn loop (7 × list_files, write, run the tests, finish) on real
workers; a turn's overhead is the time between two recorded turns that neither the model call
nor the tools took (billing the turn, the cancel and budget checks, building the next request).
The last turn is left out: its gap holds the verification of the output, not the loop.
"""

import statistics

from . import harness

TURNS = 10
PLAN = {
    "tasks": [
        {
            "id": "task_1",
            "pool": "codegen",
            "description": "Build the orders backend API",
            "priority": 1,
            "timeout_sec": 120,
            "blocked_by": [],
            "context": {},
        }
    ]
}


def loop_overheads(client, executions: int) -> tuple[list[float], int]:
    from executions.models import Attempt, AttemptTurn
    from pools.models import WorkerPool

    harness.configure(
        {"codegen": 4, "security": 2, "database": 2},
        options={"plan": PLAN, "explore_turns": TURNS - 3, "latency_sec": 0.0, "pm_latency_sec": 0.0},
    )
    WorkerPool.objects.update(max_turns=TURNS + 2)
    ids = []
    for _ in range(executions):
        from executions.services import execution_create

        ids.append(execution_create(client=client, message="loop benchmark", session_key="bench").pk)
    statuses = harness.wait_terminal(ids, timeout=300)
    overheads = []
    turns_seen = 0
    for attempt in Attempt.objects.filter(task__execution_id__in=ids, status="succeeded"):
        turns = list(AttemptTurn.objects.filter(attempt=attempt).order_by("number"))
        turns_seen += len(turns)
        previous = attempt.started_at
        for turn in turns[:-1]:
            gap = (turn.created_at - previous).total_seconds() - turn.duration_sec
            overheads.append(max(0.0, gap))
            previous = turn.created_at
    completed = sum(1 for s in statuses.values() if s == "completed")
    return overheads, completed


def run(ctx) -> dict:
    executions = 8 if ctx.quick else 24
    client, _ = harness.bench_client()
    with harness.engine_workers():
        overheads, completed = loop_overheads(client, executions)
    turn = harness.summary_ms(overheads)
    return {
        "title": "Agent loop: the engine's time per turn (ms)",
        "columns": ["measure", "samples", "p50", "p99", "target"],
        "rows": [
            ["engine overhead per turn", len(overheads), turn["p50_ms"], turn["p99_ms"], "p99 ≤ 20"],
        ],
        "checks": [
            ("engine overhead per turn p99 ≤ 20 ms", turn["p99_ms"] <= 20, f"{turn['p99_ms']} ms"),
            ("every execution completed", completed == executions, f"{completed}/{executions}"),
        ],
        "notes": [
            f"{executions} executions of one codegen task, each a {TURNS}-turn offline loop with no model "
            f"latency; median turn gap {statistics.median(overheads) * 1000:.1f} ms"
        ],
        "data": {"turn_overhead_ms": turn},
    }
