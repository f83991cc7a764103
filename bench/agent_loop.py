"""The agent loop: the engine's own time per turn (the sandbox's is bench/sandbox.py's).

Offline agents with
no model latency working a 10-turn loop (7 × list_files, write, run the tests, finish) on real
workers; a turn's overhead is the time between two recorded turns that neither the model call
nor the tools took (billing the turn, the cancel and budget checks, building the next request).
The first turn's gap is the attempt's set-up (pool, dependencies, workspace), reported apart; the
last turn is left out: its gap holds the verification of the output, not the loop.
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


def loop_overheads(client, executions: int) -> tuple[list[float], list[float], int]:
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
    by_turn: dict[int, list[float]] = {}
    turns_seen = 0
    for attempt in Attempt.objects.filter(task__execution_id__in=ids, status="succeeded"):
        turns = list(AttemptTurn.objects.filter(attempt=attempt).order_by("number"))
        turns_seen += len(turns)
        previous = attempt.started_at
        for turn in turns[:-1]:
            gap = max(0.0, (turn.created_at - previous).total_seconds() - turn.duration_sec)
            overheads.append(gap)
            by_turn.setdefault(turn.number, []).append(gap)
            previous = turn.created_at
    completed = sum(1 for s in statuses.values() if s == "completed")
    setup = by_turn.pop(1, [])
    loop = [gap for gaps in by_turn.values() for gap in gaps]
    return loop, setup, completed


def run(ctx) -> dict:
    executions = 8 if ctx.quick else 24
    client, _ = harness.bench_client()
    with harness.engine_workers():
        overheads, setup, completed = loop_overheads(client, executions)
    turn = harness.summary_ms(overheads)
    first = harness.summary_ms(setup)
    return {
        "title": "Agent loop: the engine's time per turn (ms)",
        "columns": ["measure", "samples", "p50", "p99", "target"],
        "rows": [
            [
                "engine overhead per turn (turns 2…9)",
                len(overheads),
                turn["p50_ms"],
                turn["p99_ms"],
                "p99 ≤ 20",
            ],
            ["attempt set-up before the first call", len(setup), first["p50_ms"], first["p99_ms"], ""],
        ],
        "checks": [
            ("engine overhead per turn p99 ≤ 20 ms", turn["p99_ms"] <= 20, f"{turn['p99_ms']} ms"),
            ("every execution completed", completed == executions, f"{completed}/{executions}"),
        ],
        "notes": [
            f"{executions} executions of one codegen task, each a {TURNS}-turn offline loop with no model "
            f"latency; median turn gap {statistics.median(overheads) * 1000:.1f} ms"
        ],
        "data": {"turn_overhead_ms": turn, "setup_ms": first},
    }
