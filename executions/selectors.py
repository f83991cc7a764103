"""Read models for the API, the console and the CLI."""

from django.db.models import Count, Q

from pools import llm
from pools.contracts.contract import project_part
from pools.models import WorkerPool

from . import projects
from .invoices import execution_comparison
from .models import Attempt, Client, Event, Execution, Project, Task
from .pm_coordinator import PLAN_TASK_FIELDS
from .states import ExecutionStatus, TaskStatus


def execution_for_client(client: Client, execution_id: str) -> Execution | None:
    return Execution.objects.filter(pk=execution_id, client=client).first()


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def task_row(task: Task, attempts: int) -> dict:
    return {
        "id": task.key,
        "pool": task.pool,
        "kind": task.kind,
        "description": task.description,
        "status": task.status,
        "attempts": attempts,
        "blocked_by": task.blocked_by,
        "soft_deps": task.soft_deps,
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
        "progress": 100 if task.status == TaskStatus.SUCCEEDED else task.progress,
        "tokens_in": task.tokens_in,
        "tokens_out": task.tokens_out,
        "cost_usd": f"{task.cost_usd:.6f}",
        "error": task.error,
        "verification": task.result.get("verification"),
        "tests": task.result.get("tests"),
        "commit": task.commit or None,
    }


def attempt_transcript(execution: Execution, task_key: str, number: int) -> dict | None:
    """One attempt of a task with its turns: what the model said, the tools it called and what they
    answered (cut), tokens, cost and time per turn."""
    attempt = (
        Attempt.objects.filter(task__execution=execution, task__key=task_key, number=number)
        .select_related("task")
        .first()
    )
    if attempt is None:
        return None
    result = attempt.task.result if attempt.status == "succeeded" else {}
    return {
        "task": task_key,
        "number": attempt.number,
        "status": attempt.status,
        "model": attempt.model,
        "provider": attempt.provider,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "error": attempt.error,
        "tokens_in": attempt.tokens_in,
        "tokens_out": attempt.tokens_out,
        "cost_usd": f"{attempt.cost_usd:.6f}",
        "commands": result.get("commands", []),
        "tests": result.get("tests"),
        "turns": [
            {
                "number": turn.number,
                "text": turn.text,
                "tool_calls": turn.tool_calls,
                "tool_results": turn.tool_results,
                "tokens_in": turn.tokens_in,
                "tokens_out": turn.tokens_out,
                "cost_usd": f"{turn.cost_usd:.6f}",
                "duration_sec": turn.duration_sec,
            }
            for turn in attempt.turns.order_by("number")
        ],
    }


def tasks_with_attempts(execution: Execution) -> list[tuple[Task, int]]:
    tasks = Task.objects.filter(execution=execution).annotate(n_attempts=Count("attempts")).order_by("id")
    return [(t, t.n_attempts) for t in tasks]


def execution_brief(execution_id: str) -> dict:
    execution = Execution.objects.get(pk=execution_id)
    tasks = tasks_with_attempts(execution)
    rows = [task_row(t, n) for t, n in tasks]
    if not rows and execution.status == ExecutionStatus.AWAITING_APPROVAL:
        # No task exists before the approval: the quoted plan's, which the approval would start.
        rows = [
            {
                "id": t["id"],
                "pool": t["pool"],
                "description": t["description"],
                "status": ExecutionStatus.AWAITING_APPROVAL,
                "progress": 0,
                "blocked_by": t.get("blocked_by", []),
            }
            for t in execution.plan.get("tasks", [])
        ]
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "approval": execution.approval,
        "parallel_tasks": len(rows),
        "estimated_duration_sec": execution.estimated_duration_sec,
        "estimated_cost_usd": _usd6(execution.estimated_cost_usd),
        "fee_usd": f"{execution.fee_usd:.2f}",
        "quoted_fee_usd": None if execution.quoted_fee_usd is None else f"{execution.quoted_fee_usd:.2f}",
        "tasks": rows,
    }


def _usd6(value) -> str | None:
    return None if value is None else f"{value:.6f}"


def plan_provider(execution: Execution) -> str:
    """The PM model that planned the execution, and why it fell back to offline if it did."""
    if not execution.plan_source:
        return ""
    planned = (
        execution.events.filter(type__in=["execution.planned", "execution.awaiting_approval"])
        .values_list("payload", flat=True)
        .first()
        or {}
    )
    return planned.get("model", "") + (
        f" (offline: {planned['model_fallback']})" if planned.get("model_fallback") else ""
    )


def plan_view(execution: Execution) -> dict | None:
    """The execution's plan as the client approves (or edits) it: each task's plan fields and its
    expected duration."""
    plan = execution.plan or {}
    if not plan.get("tasks"):
        return None
    expected = plan.get("expected", {})
    return {
        "tasks": [
            {**{k: t[k] for k in PLAN_TASK_FIELDS}, "expected_sec": expected.get(t["id"])}
            for t in plan["tasks"]
        ]
    }


def execution_detail(execution: Execution) -> dict:
    tasks = tasks_with_attempts(execution)
    provider = plan_provider(execution)
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "approval": execution.approval,
        "approval_expires_at": _iso(execution.approval_expires_at),
        "quoted_fee_usd": None if execution.quoted_fee_usd is None else f"{execution.quoted_fee_usd:.2f}",
        "callback_url": execution.callback_url,
        "follows": execution.follows_id,
        "plan": plan_view(execution),
        "mode": execution.mode,
        "requested_mode": execution.requested_mode,
        "routing_reason": execution.routing_reason,
        "project": execution.project,
        "base_commit": execution.base_commit or None,
        "result_commit": execution.result_commit or None,
        "message": execution.message,
        "created_at": execution.created_at.isoformat(),
        "duration_sec": execution.duration_sec,
        "estimated_duration_sec": execution.estimated_duration_sec,
        "serial_estimate_sec": execution.serial_estimate_sec,
        "tasks_completed": sum(1 for t, _ in tasks if t.status == TaskStatus.SUCCEEDED),
        "tasks_failed": sum(1 for t, _ in tasks if t.status in (TaskStatus.DEAD, TaskStatus.BLOCKED)),
        "cost": f"${execution.cost_usd:.2f}",
        "cost_usd": f"{execution.cost_usd:.6f}",
        "fee_usd": f"{execution.fee_usd:.2f}",
        "refund_usd": f"{execution.refund_usd:.2f}",
        "budget_usd": f"{execution.budget_usd:.2f}" if execution.budget_usd is not None else None,
        "estimated_cost_usd": _usd6(execution.estimated_cost_usd),
        "comparison": execution_comparison(execution),
        "tokens_in": execution.tokens_in,
        "tokens_out": execution.tokens_out,
        "final_response": execution.final_response,
        "quality_score": execution.quality_score,
        "plan_source": execution.plan_source,
        "plan_notes": execution.plan_notes,
        "provider": provider,
        "contract": execution.contract or {"endpoints": [], "tables": [], "ownership": {}},
        "contract_checks": {k: v for k, v in (execution.contract_report or {}).items() if k != "mismatches"},
        "integration": execution.integration or {"ran": False, "reason": "not run yet"},
        "tasks": [task_row(t, n) for t, n in tasks],
        "conflicts": [conflict_row(c) for c in execution.conflicts.all()],
    }


EVIDENCE_FIELDS = ("check", "file", "line", "found", "expected")


def conflict_row(conflict) -> dict:
    row = {
        "kind": conflict.kind,
        "status": conflict.status,
        "between": conflict.between,
        "description": conflict.description,
        "resolution": conflict.resolution,
        "rounds": conflict.rounds,
        "evidence": [{k: e.get(k) for k in EVIDENCE_FIELDS} for e in conflict.details.get("evidence", [])],
    }
    if conflict.details.get("gate"):
        row["gate"] = conflict.details["gate"]
    return row


def execution_list(client: Client, *, status: str | None = None, project: str | None = None):
    rows = Execution.objects.filter(client=client)
    if status:
        rows = rows.filter(status=status)
    if project:
        rows = rows.filter(project=project)
    rows = rows.annotate(
        tasks_total=Count("tasks"),
        tasks_completed=Count("tasks", filter=Q(tasks__status=TaskStatus.SUCCEEDED)),
    ).order_by("-created_at")
    return _ListView(rows)


class _ListView:
    """Lazily formats only the page that the paginator slices out (no N+1, no full scan)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return self.rows.count()

    def count(self):
        return self.rows.count()

    def __getitem__(self, item):
        return [
            {
                "execution_id": e.pk,
                "status": e.status,
                "mode": e.mode,
                "project": e.project,
                "message": e.message[:300],
                "created_at": e.created_at.isoformat(),
                "duration_sec": e.duration_sec,
                "cost_usd": f"{e.cost_usd:.6f}",
                "tasks_total": e.tasks_total,
                "tasks_completed": e.tasks_completed,
            }
            for e in self.rows[item]
        ]


def events_after(execution: Execution, after: int, limit: int = 500) -> list[dict]:
    return [
        e.as_message()
        for e in Event.objects.filter(execution=execution, seq__gt=after).order_by("seq")[:limit]
    ]


def pool_overview() -> list[dict]:
    counts = {
        (row["pool"], row["status"]): row["n"]
        for row in Task.objects.filter(status__in=[TaskStatus.READY, TaskStatus.QUEUED, TaskStatus.RUNNING])
        .values("pool", "status")
        .annotate(n=Count("id"))
    }
    result = []
    for pool in WorkerPool.objects.select_related("model"):
        spec = llm.resolve(pool.model)
        result.append(
            {
                "name": pool.name,
                "enabled": pool.enabled,
                "max_concurrent": pool.max_concurrent,
                "timeout_sec": pool.timeout_sec,
                "max_retries": pool.max_retries,
                "model": pool.model.name if pool.model else None,
                "provider": spec.provider,
                "provider_note": spec.fallback_reason,
                "queued": counts.get((pool.name, TaskStatus.QUEUED), 0),
                "running": counts.get((pool.name, TaskStatus.RUNNING), 0),
                "ready": counts.get((pool.name, TaskStatus.READY), 0),
            }
        )
    return result


def project_row(project: Project, executions: int) -> dict:
    return {
        "name": project.name,
        "head": project.head or None,
        "executions": executions,
        "updated_at": project.updated_at.isoformat(),
        "clone_url": projects.clone_url(project.name),
    }


def project_list(client: Client) -> list[dict]:
    counts = dict(
        Execution.objects.filter(client=client)
        .order_by()
        .values("project")
        .annotate(n=Count("pk"))
        .values_list("project", "n")
    )
    return [project_row(p, counts.get(p.name, 0)) for p in Project.objects.filter(client=client)]


def project_for_client(client: Client, name: str) -> Project | None:
    return Project.objects.filter(client=client, name=name).first()


def project_detail(project: Project, *, at: str | None = None) -> dict:
    """A project with main's history (each commit's execution and task) and its files at `at` (a
    commit of the project; default main)."""
    count = Execution.objects.filter(client_id=project.client_id, project=project.name).count()
    try:
        history = projects.history(project.client_id, project.name)
        files = projects.head_files(project.client_id, project.name, at)
    except projects.ProjectError:  # no commit yet (or nothing on disk): an empty project
        history, files = [], []
    return {
        **project_row(project, count),
        "history": history,
        "files": [{"path": path, "size": size} for path, size in files],
        "contract": project_part(project.contract),
    }
