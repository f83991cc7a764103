"""Read models for the staff console: every client's executions, one execution in full, pool load.

Everything the console shows comes from here as plain JSON-ready dicts, so the server-rendered
first paint and the live refreshes (the `*.json` views) are the same data.
"""

import math
import re
from collections import Counter
from datetime import datetime

import nh3
from django.db.models import Count, Max, Q
from django.utils import timezone
from markdown_it import MarkdownIt

from pools.models import WorkerPool

from . import projects, selectors
from .models import Attempt, Client, Execution, Project, Task, WebhookDelivery
from .states import (
    DELIVERY_FINAL,
    EXECUTION_LIVE,
    EXECUTION_RETRYABLE,
    TASK_REOPENABLE,
    ExecutionStatus,
    TaskStatus,
)

# How many recent attempts per pool the p50/p95 durations are computed from.
DURATION_SAMPLES = 500
LIST_LIMIT = 100

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
# nh3's allow-list minus images: model output must not make the staff's browser fetch anything.
_ALLOWED_TAGS = nh3.ALLOWED_TAGS - {"img", "map", "area"}


def render_markdown(text: str) -> str:
    """Markdown from a model (untrusted) → HTML that cannot run script: markdown-it with raw HTML
    off, then nh3's allow-list (no script, no event handlers, no javascript: URLs)."""
    html = _markdown.render(text or "")
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        link_rel="noopener noreferrer nofollow",
        url_schemes={"http", "https", "mailto"},
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def execution_rows(
    *, status: str = "", project: str = "", client_id: int | None = None, limit: int = LIST_LIMIT
) -> list[dict]:
    """The console's executions list, newest first, with task and conflict counts (one query)."""
    rows = Execution.objects.select_related("client")
    if status:
        rows = rows.filter(status=status)
    if project:
        rows = rows.filter(project=project)
    if client_id:
        rows = rows.filter(client_id=client_id)
    rows = rows.annotate(
        tasks_total=Count("tasks", distinct=True),
        tasks_done=Count("tasks", filter=Q(tasks__status=TaskStatus.SUCCEEDED), distinct=True),
        tasks_running=Count("tasks", filter=Q(tasks__status=TaskStatus.RUNNING), distinct=True),
        tasks_lost=Count(
            "tasks", filter=Q(tasks__status__in=[TaskStatus.DEAD, TaskStatus.BLOCKED]), distinct=True
        ),
        conflicts_total=Count("conflicts", distinct=True),
        conflicts_resolved=Count("conflicts", filter=Q(conflicts__status="resolved"), distinct=True),
    ).order_by("-created_at")[:limit]
    return [
        {
            "id": e.pk,
            "client": e.client.name,
            "project": e.project,
            "message": e.message[:140],
            "status": e.status,
            "status_label": status_label(e.status),
            "planning": e.status == ExecutionStatus.PLANNING,
            "mode": e.mode or e.requested_mode,
            "created_at": _iso(e.created_at),
            "duration_sec": e.duration_sec,
            "estimated_duration_sec": e.estimated_duration_sec,
            "cost_usd": f"{e.cost_usd:.4f}",
            "tasks_total": e.tasks_total,
            "tasks_done": e.tasks_done,
            "tasks_running": e.tasks_running,
            "tasks_lost": e.tasks_lost,
            "conflicts_total": e.conflicts_total,
            "conflicts_resolved": e.conflicts_resolved,
            "last_seq": e.next_seq,
            "terminal": e.is_terminal,
        }
        for e in rows
    ]


def list_filters() -> dict:
    """Choices for the list's filter bar."""
    return {
        "statuses": list(ExecutionStatus.values),
        "projects": list(
            Execution.objects.exclude(project="")
            .order_by("project")
            .values_list("project", flat=True)
            .distinct()[:200]
        ),
        "clients": [{"id": c.pk, "name": c.name} for c in Client.objects.order_by("name")],
    }


def status_label(status: str) -> str:
    """The words a status is shown with (the value itself, readable)."""
    return status.replace("_", " ")


def _attempt_row(attempt: Attempt) -> dict:
    return {
        "number": attempt.number,
        "status": attempt.status,
        "status_label": status_label(attempt.status),
        "worker": attempt.worker,
        "model": attempt.model,
        "provider": attempt.provider,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "duration_sec": attempt.duration_sec,
        "error": attempt.error,
        "tokens_in": attempt.tokens_in,
        "tokens_out": attempt.tokens_out,
        "cost_usd": f"{attempt.cost_usd:.6f}",
    }


def _task_row(task: Task, attempts: list[Attempt]) -> dict:
    result = task.result or {}
    return {
        "key": task.key,
        "pool": task.pool,
        "kind": task.kind,
        "description": task.description,
        "status": task.status,
        "status_label": status_label(task.status),
        # What the page draws for a task: a progress bar while it runs, a waiting line while it
        # waits for a slot.
        "running": task.status == TaskStatus.RUNNING,
        "waiting": task.status in (TaskStatus.READY, TaskStatus.QUEUED),
        "priority": task.priority,
        "blocked_by": task.blocked_by,
        "soft_deps": task.soft_deps,
        "progress": 100 if task.status == TaskStatus.SUCCEEDED else task.progress,
        "expected_sec": task.expected_sec,
        "timeout_sec": task.timeout_sec,
        "failed_attempts": task.failed_attempts,
        "max_retries": task.max_retries,
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
        "ready_at": _iso(task.ready_at),
        "tokens_in": task.tokens_in,
        "tokens_out": task.tokens_out,
        "cost_usd": f"{task.cost_usd:.6f}",
        "error": task.error,
        "summary": result.get("summary", ""),
        # Contents load on demand (task_files): the snapshot is refetched on every event.
        "files": [
            {
                "path": f.get("path", ""),
                "lines": f.get("content", "").count("\n") + 1,
                "bytes": len(f.get("content", "").encode()),
            }
            for f in result.get("files", [])
        ],
        "findings": result.get("findings", []),
        "tests": result.get("tests"),
        "attempts": [_attempt_row(a) for a in attempts],
    }


def execution_snapshot(execution_id: str, *, may_change: bool = False) -> dict | None:
    """One execution in full, as of `last_seq`, with everything the page shows already decided:
    counts, progress, labels, and which actions apply (`may_change`: the viewer holds the
    permission to cancel and retry). The page renders this and never derives states itself."""
    execution = Execution.objects.select_related("client").filter(pk=execution_id).first()
    if execution is None:
        return None
    tasks = list(execution.tasks.order_by("id"))
    attempts: dict[int, list[Attempt]] = {}
    for attempt in Attempt.objects.filter(task__execution=execution).order_by("task_id", "number"):
        attempts.setdefault(attempt.task_id, []).append(attempt)
    conflicts = list(execution.conflicts.all())
    by_status = Counter(t.status for t in tasks)
    succeeded = by_status[TaskStatus.SUCCEEDED]
    cancellable = execution.status in EXECUTION_LIVE
    retryable = execution.status in EXECUTION_RETRYABLE and bool(
        sum(by_status[status] for status in TASK_REOPENABLE)
    )
    return {
        "id": execution.pk,
        "client": execution.client.name,
        "project": execution.project,
        "message": execution.message,
        "status": execution.status,
        "status_label": status_label(execution.status),
        "planning": execution.status == ExecutionStatus.PLANNING,
        "mode": execution.mode,
        "requested_mode": execution.requested_mode,
        "routing_reason": execution.routing_reason,
        "plan_source": execution.plan_source,
        "plan_notes": execution.plan_notes,
        "provider": selectors.plan_provider(execution),
        "created_at": _iso(execution.created_at),
        "started_at": _iso(execution.started_at),
        "finished_at": _iso(execution.finished_at),
        "now": timezone.now().isoformat(),
        "duration_sec": execution.duration_sec,
        "estimated_duration_sec": execution.estimated_duration_sec,
        "serial_estimate_sec": execution.serial_estimate_sec,
        "saved_vs_serial": _saved_vs_serial(execution),
        "cost_usd": f"{execution.cost_usd:.4f}",
        "fee_usd": f"{execution.fee_usd:.2f}",
        "refund_usd": f"{execution.refund_usd:.2f}",
        "budget_usd": f"{execution.budget_usd:.2f}" if execution.budget_usd is not None else None,
        "tokens_in": execution.tokens_in,
        "tokens_out": execution.tokens_out,
        "quality_score": execution.quality_score,
        "error": execution.error,
        "final_response_html": render_markdown(execution.final_response) if execution.final_response else "",
        "terminal": execution.is_terminal,
        "awaiting_approval": execution.status == ExecutionStatus.AWAITING_APPROVAL,
        "can_approve": may_change and execution.status == ExecutionStatus.AWAITING_APPROVAL,
        "approval": execution.approval,
        "approval_expires_at": _iso(execution.approval_expires_at),
        "quoted_fee_usd": None if execution.quoted_fee_usd is None else f"{execution.quoted_fee_usd:.2f}",
        "estimated_cost_usd": None
        if execution.estimated_cost_usd is None
        else f"{execution.estimated_cost_usd:.4f}",
        "plan": (selectors.plan_view(execution) or {}).get("tasks", []),
        "plan_pools": (
            sorted(WorkerPool.objects.filter(enabled=True).values_list("name", flat=True))
            if execution.status == ExecutionStatus.AWAITING_APPROVAL
            else []
        ),
        "can_cancel": may_change and cancellable,
        "can_retry": may_change and retryable,
        "task_counts": {
            "total": len(tasks),
            "succeeded": succeeded,
            "running": by_status[TaskStatus.RUNNING],
            "dead_or_blocked": by_status[TaskStatus.DEAD] + by_status[TaskStatus.BLOCKED],
            "cancelled": by_status[TaskStatus.CANCELLED],
        },
        "progress_pct": round(100 * succeeded / len(tasks)) if tasks else 0,
        "tasks": [_task_row(t, attempts.get(t.pk, [])) for t in tasks],
        "conflicts": [
            {
                "kind": c.kind,
                "status": c.status,
                "status_label": status_label(c.status),
                "between": c.between,
                "description": c.description,
                "resolution": c.resolution,
                "rounds": c.rounds,
                "created_at": _iso(c.created_at),
                "resolved_at": _iso(c.resolved_at),
                "evidence": selectors.conflict_row(c)["evidence"],
                "gate": c.details.get("gate"),
            }
            for c in conflicts
        ],
        "conflicts_resolved": sum(1 for c in conflicts if c.status == "resolved"),
        "contract": execution.contract or {},
        "contract_checks": {k: v for k, v in (execution.contract_report or {}).items() if k != "mismatches"},
        "integration": execution.integration or {},
        "last_seq": execution.next_seq,
    }


def webhook_deliveries(execution_id: str) -> list[dict]:
    """The execution's webhook deliveries, newest first, each with its attempts and the answers."""
    rows = WebhookDelivery.objects.filter(execution_id=execution_id).prefetch_related("tries").order_by("-pk")
    return [
        {
            "pk": d.pk,
            "delivery_id": str(d.delivery_id),
            "event": d.event,
            "url": d.url,
            "status": d.status,
            "status_label": d.get_status_display(),
            "final": d.status in DELIVERY_FINAL,
            "attempts": d.attempts,
            "next_attempt_at": None if d.status in DELIVERY_FINAL else _iso(d.next_attempt_at),
            "last_error": d.last_error,
            "tries": [
                {
                    "number": t.number,
                    "started_at": _iso(t.started_at),
                    "status_code": t.status_code,
                    "duration_ms": t.duration_ms,
                    "error": t.error,
                    "response": t.response[:300],
                }
                for t in d.tries.all()
            ],
        }
        for d in rows
    ]


def _saved_vs_serial(execution: Execution) -> float | None:
    """Share of the serial estimate's time a delivered execution saved (negative: it was slower)."""
    delivered = execution.status in (ExecutionStatus.COMPLETED, ExecutionStatus.PARTIAL)
    if not delivered or not execution.duration_sec or not execution.serial_estimate_sec:
        return None
    return 1 - execution.duration_sec / execution.serial_estimate_sec


def task_files(execution_id: str, task_key: str) -> list[dict] | None:
    """The files a task wrote, with their contents (None for an unknown task)."""
    result = (
        Task.objects.filter(execution_id=execution_id, key=task_key).values_list("result", flat=True).first()
    )
    if result is None:
        return None
    return [
        {"path": f.get("path", ""), "content": f.get("content", "")} for f in (result or {}).get("files", [])
    ]


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (None for no data)."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def pool_stats() -> list[dict]:
    """Per pool: queue length, running against max_concurrent, p50/p95 of recent attempt durations,
    retries and dead tasks."""
    overview = {row["name"]: row for row in selectors.pool_overview()}
    retries = dict(
        Attempt.objects.filter(number__gt=1)
        .values("task__pool")
        .annotate(n=Count("id"))
        .values_list("task__pool", "n")
    )
    statuses = {
        (row["pool"], row["status"]): row["n"]
        for row in Task.objects.filter(status__in=[TaskStatus.DEAD, TaskStatus.BLOCKED, TaskStatus.SUCCEEDED])
        .values("pool", "status")
        .annotate(n=Count("id"))
    }
    last_activity = dict(
        Attempt.objects.values("task__pool").annotate(at=Max("started_at")).values_list("task__pool", "at")
    )
    rows = []
    for pool in WorkerPool.objects.order_by("name"):
        base = overview.get(pool.name, {})
        durations = [
            (finished - started).total_seconds()
            for started, finished in Attempt.objects.filter(task__pool=pool.name, status="succeeded")
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:DURATION_SAMPLES]
        ]
        p50, p95 = percentile(durations, 0.5), percentile(durations, 0.95)
        rows.append(
            {
                "name": pool.name,
                "enabled": pool.enabled,
                "model": base.get("model"),
                "provider": base.get("provider", ""),
                "provider_note": base.get("provider_note", ""),
                "max_concurrent": pool.max_concurrent,
                "timeout_sec": pool.timeout_sec,
                "max_retries": pool.max_retries,
                "ready": base.get("ready", 0),
                "queued": base.get("queued", 0),
                "running": base.get("running", 0),
                "queue_length": base.get("ready", 0) + base.get("queued", 0),
                "p50_sec": round(p50, 3) if p50 is not None else None,
                "p95_sec": round(p95, 3) if p95 is not None else None,
                "samples": len(durations),
                "retries": retries.get(pool.name, 0),
                "dead": statuses.get((pool.name, TaskStatus.DEAD), 0),
                "blocked": statuses.get((pool.name, TaskStatus.BLOCKED), 0),
                "succeeded": statuses.get((pool.name, TaskStatus.SUCCEEDED), 0),
                "last_activity": _iso(last_activity.get(pool.name)),
            }
        )
    return rows


COMMIT_ID = re.compile(r"^[0-9a-f]{4,40}$")


def project_rows() -> list[dict]:
    """Every client's projects, the latest landed first."""
    counts = Counter(Execution.objects.values_list("client_id", "project"))
    return [
        {
            "client": p.client.name,
            "client_id": p.client_id,
            "name": p.name,
            "head": p.head,
            "executions": counts[(p.client_id, p.name)],
            "updated_at": _iso(p.updated_at),
        }
        for p in Project.objects.select_related("client")
    ]


def project_page(client_id: int, name: str, *, at: str = "", path: str = "") -> dict | None:
    """A project's history on main (each commit's execution and task), its files at `at` (a commit
    id or prefix; default main), and one file's text when `path` names one of them."""
    project = Project.objects.select_related("client").filter(client_id=client_id, name=name).first()
    if project is None:
        return None
    at = at if COMMIT_ID.match(at or "") else ""
    try:
        history = projects.history(client_id, name)
        commit = next((c["commit"] for c in history if c["commit"].startswith(at)), "") if at else ""
        commit = commit or (history[0]["commit"] if history else "")
        files = projects.head_files(client_id, name, commit or None) if commit else []
        content = projects.file_at(client_id, name, commit, path) if path in dict(files) else None
    except projects.ProjectError as exc:
        return {"project": project, "error": str(exc), "history": [], "files": [], "commit": "", "path": ""}
    return {
        "project": project,
        "clone_url": projects.clone_url(name),
        "history": history,
        "commit": commit,
        "files": [{"path": p, "size": size} for p, size in files],
        "path": path if content is not None else "",
        "content": content,
        "error": "",
    }


def execution_diff(execution_id: str) -> str | None:
    """The execution's diff; None when it has not landed (or its repository cannot be read)."""
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is None or not execution.result_commit:
        return None
    try:
        return projects.execution_diff(execution)[0]
    except projects.ProjectError:
        return None


def task_diff(execution_id: str, task_key: str) -> str | None:
    """What a task's commit changed; None without a commit (or a readable repository)."""
    task = Task.objects.select_related("execution").filter(execution_id=execution_id, key=task_key).first()
    if task is None or not task.commit:
        return None
    try:
        return projects.task_diff(task.execution, task)
    except projects.ProjectError:
        return None
