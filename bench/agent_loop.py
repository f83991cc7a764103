"""The agent loop: the engine's own time per turn (the sandbox's is bench/sandbox.py's).

Offline agents work a 10-turn loop (7 × list_files, write, run the tests, finish) on real workers,
one loop at a time and four at a time (the codegen pool's limit), each with no model latency and
with the seed's backend latency scaled ÷100 (0.9 s a task, 90 ms a turn). A turn's overhead is the
time between two recorded turns that neither the model call nor the tools took (billing the turn,
the cancel and budget checks, building the next request, and any wait for the database's write
lock). The first turn's gap is the attempt's set-up (pool, dependencies, workspace), reported
apart; the last turn is left out: its gap holds the verification of the output, not the loop.

One at a time, each execution starts when the one before has ended: the loop runs alone. Four at a
time, the 24 executions start together: their plans, successes and aggregations (contract checks,
the integration gate's sandbox run, landing) run beside the loops. With no model latency, four
loops keep both cores of a small machine busy with their tools and sandbox runs: a turn's gap then
also holds its wait for a core and for the write transactions of those neighbours. With a model
latency the loops wait on the model as real ones do.
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


CONCURRENCY = (1, 4)
LATENCIES = (0.0, 0.9)  # seconds a task: none, and the seed's 90 s backend ÷ 100


def loop_overheads(
    client, executions: int, at_a_time: int, latency: float
) -> tuple[list[float], list[float], int]:
    from executions.models import Attempt, AttemptTurn
    from executions.services import execution_create
    from pools.models import WorkerPool

    harness.configure(
        {"codegen": at_a_time, "security": 2, "database": 2},
        options={
            "plan": PLAN,
            "explore_turns": TURNS - 3,
            "latency_sec": latency,
            "pm_latency_sec": 0.0,
        },
    )
    WorkerPool.objects.update(max_turns=TURNS + 2)

    def start() -> str:
        return execution_create(client=client, message="loop benchmark", session_key="bench").pk

    if at_a_time == 1:
        # One loop alone: each execution starts once the one before has ended (aggregation included).
        statuses = {}
        for _ in range(executions):
            statuses |= harness.wait_terminal([start()], timeout=120)
        ids = list(statuses)
    else:
        ids = [start() for _ in range(executions)]
        statuses = harness.wait_terminal(ids, timeout=300)
    by_turn: dict[int, list[float]] = {}
    for attempt in Attempt.objects.filter(task__execution_id__in=ids, status="succeeded"):
        turns = list(AttemptTurn.objects.filter(attempt=attempt).order_by("number"))
        previous = attempt.started_at
        for turn in turns[:-1]:
            gap = max(0.0, (turn.created_at - previous).total_seconds() - turn.duration_sec)
            by_turn.setdefault(turn.number, []).append(gap)
            previous = turn.created_at
    completed = sum(1 for s in statuses.values() if s == "completed")
    setup = by_turn.pop(1, [])
    loop = [gap for gaps in by_turn.values() for gap in gaps]
    return loop, setup, completed


def run(ctx) -> dict:
    executions = 8 if ctx.quick else 24
    client, _ = harness.bench_client()
    rows, checks, data, notes = [], [], {}, []
    with harness.engine_workers():
        for latency in LATENCIES:
            for at_a_time in CONCURRENCY:
                overheads, setup, completed = loop_overheads(client, executions, at_a_time, latency)
                turn = harness.summary_ms(overheads)
                first = harness.summary_ms(setup)
                case = f"{at_a_time} at a time, model {latency * 1000 / TURNS:g} ms a turn"
                rows += [
                    [
                        f"{case}: per turn (turns 2…9)",
                        len(overheads),
                        turn["p50_ms"],
                        turn["p99_ms"],
                        "p99 ≤ 20",
                    ],
                    [
                        f"{case}: set-up before the first call",
                        len(setup),
                        first["p50_ms"],
                        first["p99_ms"],
                        "",
                    ],
                ]
                checks += [
                    (f"{case}: per turn p99 ≤ 20 ms", turn["p99_ms"] <= 20, f"{turn['p99_ms']} ms"),
                    (
                        f"{case}: every execution completed",
                        completed == executions,
                        f"{completed}/{executions}",
                    ),
                ]
                data[f"{at_a_time}_at_a_time_{latency:g}s"] = {"turn_overhead_ms": turn, "setup_ms": first}
                if overheads:
                    notes.append(f"{case}: median turn gap {statistics.median(overheads) * 1000:.1f} ms")
    return {
        "title": "Agent loop: the engine's time per turn (ms)",
        "columns": ["measure", "samples", "p50", "p99", "target"],
        "rows": rows,
        "checks": checks,
        "notes": [
            f"{executions} executions of one codegen task per case, each a {TURNS}-turn offline loop",
            *notes,
        ],
        "data": data,
    }
