"""Queries per transition and per API call, counted in process (CaptureQueriesContext).

The transitions run the engine's own services against the bench database with message sending
stubbed out (nothing is enqueued; the on-commit dispatch that a success triggers is counted with
it). The API calls go through Django's test client. A count that grows with the number of tasks
is an N+1.
"""

from unittest import mock

from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from . import harness
from .harness import plan_task

POOLS = ("codegen", "security", "database")


def counted(fn, *args, **kwargs):
    with CaptureQueriesContext(connection) as captured:
        value = fn(*args, **kwargs)
    return value, len(captured.captured_queries)


def fan_plan(n: int) -> list[dict]:
    """A root task and n-1 tasks that wait on it, over the three pools."""
    return [plan_task("root", "codegen", 0.1)] + [
        plan_task(f"t{i:03d}", POOLS[i % 3], 0.1, ["root"]) for i in range(1, n)
    ]


def transitions(client, n: int) -> dict:
    """Each transition on its own; dispatches (normally run on commit) counted separately."""
    from executions import billing
    from executions.attempts import attempt_succeed, task_start
    from executions.dispatch import dispatch_ready_tasks
    from executions.models import Task
    from pools import llm

    spec = llm.resolve(None)
    completion = llm.Completion(
        text="{}", input_tokens=1000, output_tokens=3000, model="offline", provider="offline"
    )
    result = {"summary": "done", "files": [{"path": "app.py", "content": "print(1)\n"}], "findings": []}
    counts = {}
    with mock.patch("executions.dispatch.dispatch_after_commit"):
        plan = fan_plan(n)
        execution, counts[f"create execution ({n} tasks)"] = counted(
            harness.execution_from_plan,
            client,
            plan,
            {t["id"]: 0.1 for t in plan},
            message="queries benchmark",
        )
        _, counts["dispatch (1 queued)"] = counted(dispatch_ready_tasks, "codegen")
        root = Task.objects.get(execution=execution, key="root")
        attempt, counts["task_start"] = counted(
            task_start, root.pk, root.dispatch_count, "bench", lease_sec=15
        )
        _, counts[f"attempt_succeed (+{n - 1} promoted)"] = counted(
            attempt_succeed, attempt.pk, result=result, usage=billing.AttemptUsage.of(spec, completion)
        )
        queued = 0
        for pool in POOLS:
            sent, count = counted(dispatch_ready_tasks, pool)
            counts[f"dispatch {pool} ({sent} queued)"] = count
            queued += sent
        child = Task.objects.filter(execution=execution, status="queued").first()
        attempt, _ = counted(task_start, child.pk, child.dispatch_count, "bench", lease_sec=15)
        _, counts["attempt_succeed (leaf)"] = counted(
            attempt_succeed, attempt.pk, result=result, usage=billing.AttemptUsage.of(spec, completion)
        )
    return counts


def api_calls(raw_key: str, execution_ids: list[str]) -> dict:
    http = HttpClient(HTTP_X_API_KEY=raw_key)
    counts = {}
    for execution_id in execution_ids:
        tasks = len(http.get(f"/api/execution/{execution_id}").json()["tasks"])
        _, counts[f"GET /api/execution/{{id}} ({tasks} tasks)"] = counted(
            http.get, f"/api/execution/{execution_id}"
        )
    _, counts["GET /api/executions?limit=50"] = counted(http.get, "/api/executions?limit=50")
    _, counts["GET /api/pools"] = counted(http.get, "/api/pools")
    _, counts["GET /api/execution/{id}/events"] = counted(
        http.get, f"/api/execution/{execution_ids[-1]}/events"
    )
    _, counts["POST /api/execute-parallel"] = counted(
        http.post,
        "/api/execute-parallel",
        {"message": "Build a contact form", "sessionKey": "bench"},
        content_type="application/json",
    )
    return counts


def run(ctx) -> dict:
    harness.configure(dict.fromkeys(POOLS, 64), latency=0.1)
    client, raw = harness.bench_client("bench-queries")
    with (
        mock.patch("executions.messages.send_run_task"),
        mock.patch("executions.messages.send_run_tasks"),
        mock.patch("executions.messages.send_aggregate"),
        mock.patch("executions.messages.send_plan"),
    ):
        rows, data = [], {}
        for n in (4, 40):
            for label, count in transitions(client, n).items():
                data[f"{label} [fan-out {n}]"] = count
                rows.append([f"fan-out of {n}", label, count])
        executions = [
            harness.execution_from_plan(
                client, fan_plan(n), {t["id"]: 0.1 for t in fan_plan(n)}, message="queries benchmark"
            ).pk
            for n in (4, 40)
        ]
        for label, count in api_calls(raw, executions).items():
            data[label] = count
            rows.append(["API", label, count])
        # Its tasks were queued with the sends stubbed: cancelled, they hold no pool slot later.
        from executions.models import Execution
        from executions.services import execution_cancel

        for execution in Execution.objects.filter(client=client):
            execution_cancel(execution, by="benchmark")
    return {
        "title": "Database queries per transition and per API call",
        "columns": ["case", "operation", "queries"],
        "rows": rows,
        "data": data,
        "notes": ["counts include the on-commit work (dispatch after a success); message sends are stubbed"],
    }
