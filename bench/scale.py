"""Scale: N executions of 10 tasks submitted at once through the HTTP API (daphne), N = 100 → 1,000.

Concurrent clients (a thread pool) POST /api/execute-parallel; the offline PM answers every
request with the same 10-task DAG (the offline model's `plan` option), agents have zero latency.
Checked: every accepted execution reaches a terminal state and completes with all its tasks (none
lost), and no pool ever ran more attempts at once than its max_concurrent (a sweep over every
attempt's [start, finish] interval). Measured: submission time, time until the last execution
finished, tasks/s, and peak RSS of the web (daphne), worker (dramatiq, all processes) and reaper
processes. The per-client API rate limit (600/min by default) is raised for the run.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from . import harness
from .harness import plan_task

LIMITS = {"codegen": 8, "security": 4, "database": 4}
CLIENT_THREADS = 16
PLAN = [
    plan_task("t01", "codegen", 0),
    plan_task("t02", "codegen", 0),
    plan_task("t03", "database", 0),
    plan_task("t04", "codegen", 0, ["t01"]),
    plan_task("t05", "security", 0, ["t02"]),
    plan_task("t06", "database", 0, ["t03"]),
    plan_task("t07", "codegen", 0, ["t04", "t06"]),
    plan_task("t08", "security", 0, ["t05", "t07"]),
    plan_task("t09", "codegen", 0),
    plan_task("t10", "security", 0, ["t09"]),
]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted(
        [(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals]
    )  # finishes first on ties
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def check_limits(execution_ids: list[str]) -> dict[str, int]:
    from executions.models import Attempt

    by_pool: dict[str, list] = {}
    for pool, started, finished in (
        Attempt.objects.filter(task__execution_id__in=execution_ids)
        .values_list("task__pool", "started_at", "finished_at")
        .iterator()
    ):
        by_pool.setdefault(pool, []).append((started.timestamp(), (finished or started).timestamp()))
    return {pool: max_overlap(intervals) for pool, intervals in by_pool.items()}


def submit_all(base: str, raw_key: str, count: int) -> tuple[list[str], list[int], float]:
    import httpx

    http = httpx.Client(
        base_url=base,
        headers={"X-API-Key": raw_key},
        timeout=120,
        limits=httpx.Limits(max_connections=CLIENT_THREADS),
    )

    def submit(i: int) -> tuple[int, str]:
        reply = http.post(
            "/api/execute-parallel",
            json={"message": f"Scale benchmark request {i}", "sessionKey": f"scale-{i}", "mode": "parallel"},
        )
        return reply.status_code, reply.json().get("execution_id", "")

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        replies = list(pool.map(submit, range(count)))
    seconds = time.monotonic() - started
    http.close()
    return [eid for code, eid in replies if code == 202], [code for code, _ in replies], seconds


def one_size(count: int) -> dict:
    from django.db.models import Count, Max, Q

    from executions.models import Execution

    _, raw = harness.bench_client(f"scale-{count}")
    env = {"OPENCLAW_API_RATE": "100000/m"}
    with harness.web_server(env) as (base, web), harness.engine_workers(env) as workers:
        memory = harness.PeakMemory(
            {"web": [p.pid for p in web], "workers": [workers.workers.pid], "reaper": [workers.reaper.pid]}
        )
        memory.start()
        started = time.time()
        ids, codes, submit_sec = submit_all(base, raw, count)
        statuses = harness.wait_terminal(ids, timeout=900)
        peaks = memory.stop()
    rows = Execution.objects.filter(pk__in=ids).aggregate(
        last=Max("finished_at"),
        n_tasks=Count("tasks"),
        n_succeeded=Count("tasks", filter=Q(tasks__status="succeeded")),
    )
    overlap = check_limits(ids)
    total_sec = rows["last"].timestamp() - started
    completed = sum(1 for s in statuses.values() if s == "completed")
    return {
        "executions": count,
        "accepted": len(ids),
        "http_errors": sum(1 for c in codes if c != 202),
        "found": len(statuses),
        "terminal": sum(1 for s in statuses.values() if s in harness.TERMINAL),
        "completed": completed,
        "tasks": rows["n_tasks"],
        "tasks_succeeded": rows["n_succeeded"],
        "submit_sec": round(submit_sec, 1),
        "total_sec": round(total_sec, 1),
        "tasks_per_sec": round(rows["n_succeeded"] / total_sec, 1),
        "max_running": overlap,
        "peak_rss_mb": peaks,
    }


def run(ctx) -> dict:
    sizes = (100, 300) if ctx.quick else (100, 1000)
    harness.configure(
        LIMITS,
        options={"plan": {"tasks": PLAN}, "latency_rules": harness.latency_rules([0]), "pm_latency_sec": 0.0},
    )
    results = [one_size(n) for n in sizes]
    rows, checks = [], []
    for r in results:
        within = all(r["max_running"].get(p, 0) <= limit for p, limit in LIMITS.items())
        rows.append(
            [
                r["executions"],
                r["accepted"],
                r["completed"],
                f"{r['tasks_succeeded']}/{r['tasks']}",
                r["submit_sec"],
                r["total_sec"],
                r["tasks_per_sec"],
                " ".join(f"{p}:{r['max_running'].get(p, 0)}/{LIMITS[p]}" for p in LIMITS),
                r["peak_rss_mb"]["web"],
                r["peak_rss_mb"]["workers"],
                r["peak_rss_mb"]["reaper"],
            ]
        )
        checks.append(
            (
                f"{r['executions']} executions: all accepted, terminal and completed, none lost",
                r["accepted"] == r["found"] == r["completed"] == r["executions"]
                and r["tasks_succeeded"] == r["tasks"] == 10 * r["executions"],
                f"{r['completed']}/{r['executions']} completed, {r['tasks_succeeded']} tasks",
            )
        )
        checks.append(
            (f"{r['executions']} executions: no pool over max_concurrent", within, r["max_running"])
        )
    small, large = results[0], results[-1]
    growth = round(large["total_sec"] / small["total_sec"], 2)
    return {
        "title": "Executions of 10 tasks submitted at once through the HTTP API",
        "columns": [
            "executions",
            "accepted",
            "completed",
            "tasks ok",
            "submit s",
            "total s",
            "tasks/s",
            "max running / limit",
            "web MB",
            "workers MB",
            "reaper MB",
        ],
        "rows": rows,
        "checks": checks,
        "data": {
            "limits": LIMITS,
            "client_threads": CLIENT_THREADS,
            "runs": results,
            "time_growth": {"from": small["executions"], "to": large["executions"], "factor": growth},
        },
        "notes": [
            f"time grows ×{growth} from {small['executions']} to {large['executions']} executions "
            f"(×{large['executions'] // small['executions']} the work)"
        ],
    }
