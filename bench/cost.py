"""Serial vs parallel on the seed's three cost-comparison projects: duration, tokens, cost.

Each request goes through the front door (execution_create → offline PM → router) once with
mode=serial and once with mode=parallel, one execution at a time, with the seed's latencies
scaled down ×100 (a single contact-form agent 1.2 s). Tokens and cost are the execution's own
totals (PM plan, agents, synthesis), from the offline model's token counts at $3/$15 per Mtok.
"""

from . import harness
from .makespan import LIMITS, SEED_LATENCIES

PROJECTS = {
    "Build a contact form": (1.2, 1.2),
    "REST API + frontend + security audit": (3.0, 1.8),
    "Full website + backend + audit + database": (6.0, 2.2),
}  # the seed's serial / parallel seconds, ÷100


def run(ctx) -> dict:
    from executions.models import Execution
    from executions.services import execution_create

    harness.configure(
        LIMITS,
        options={
            "latency_rules": SEED_LATENCIES + [{"match": "contact form", "latency_sec": 1.2}],
            "pm_latency_sec": 0.0,
        },
    )
    client, _ = harness.bench_client()
    rows, data = [], {}
    with harness.engine_workers():
        for message, seed_seconds in PROJECTS.items():
            entry = data[message] = {}
            for mode, seed_sec in zip(("serial", "parallel"), seed_seconds):
                execution = execution_create(client=client, message=message, session_key="bench", mode=mode)
                harness.wait_terminal([execution.pk], timeout=60)
                done = Execution.objects.get(pk=execution.pk)
                entry[mode] = {
                    "status": done.status,
                    "mode": done.mode,
                    "tasks": done.tasks.count(),
                    "duration_sec": done.duration_sec,
                    "estimate_sec": done.estimated_duration_sec,
                    "tokens": done.tokens_in + done.tokens_out,
                    "cost_usd": float(done.cost_usd),
                    "fee_usd": float(done.fee_usd),
                    "seed_sec_scaled": seed_sec,
                }
            serial, parallel = entry["serial"], entry["parallel"]
            entry["speedup_pct"] = round((1 - parallel["duration_sec"] / serial["duration_sec"]) * 100, 1)
            entry["token_delta_pct"] = round((parallel["tokens"] / serial["tokens"] - 1) * 100, 1)
            for mode in ("serial", "parallel"):
                got = entry[mode]
                rows.append(
                    [
                        message if mode == "serial" else "",
                        mode,
                        got["tasks"],
                        got["duration_sec"],
                        got["seed_sec_scaled"],
                        got["tokens"],
                        f"${got['cost_usd']:.4f}",
                        got["status"],
                    ]
                )
            rows.append(
                [
                    "",
                    "parallel vs serial",
                    "",
                    f"{-entry['speedup_pct']:+.1f}%",
                    "",
                    f"{entry['token_delta_pct']:+.1f}%",
                    "",
                    "",
                ]
            )
    return {
        "title": "Serial vs parallel on the seed's cost-comparison projects",
        "columns": [
            "project",
            "mode",
            "tasks",
            "duration s",
            "seed s ÷100",
            "tokens",
            "model cost",
            "status",
        ],
        "rows": rows,
        "checks": [
            (
                f"{m}: both modes completed",
                all(d[k]["status"] == "completed" for k in ("serial", "parallel")),
                f"{d['serial']['status']}/{d['parallel']['status']}",
            )
            for m, d in data.items()
        ],
        "data": data,
        "notes": [
            "duration = planned → finished, aggregation and synthesis included; "
            "the seed's times include the PM's planning, these start after it"
        ],
    }
