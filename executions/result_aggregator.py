"""Aggregation: merge the agents' files into one project tree, synthesize, settle the execution."""

import logging

from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings
from pools.prompts import SYNTHESIS_SYSTEM, synthesis_prompt

from . import billing, events
from .models import Conflict, Execution, ExecutionStatus, Task, TaskStatus
from .parallel_executor import cas_execution

log = logging.getLogger("openclaw.aggregator")

# Later kinds override earlier ones when two tasks write one path.
KIND_ORDER = {"plan": 0, "revision": 1, "remediation": 2, "reaudit": 3}


def on_task_succeeded(task: Task) -> None:
    """Hook for conflicts found as soon as a result arrives (inside the success transaction)."""


def merged_files(tasks: list[Task]) -> tuple[dict[str, dict], list[dict]]:
    """The project tree {path: {content, task}} and the path collisions with how each was decided."""
    tree: dict[str, dict] = {}
    collisions = []
    ordered = sorted((t for t in tasks if t.status == TaskStatus.SUCCEEDED),
                     key=lambda t: (KIND_ORDER.get(t.kind, 0), t.finished_at or timezone.now(), t.pk))
    for task in ordered:
        for item in task.result.get("files", []):
            path = item["path"]
            previous = tree.get(path)
            if previous and previous["content"] != item["content"]:
                collisions.append({"path": path, "kept": task.key, "replaced": previous["task"],
                                   "rule": "remediation beats original, later revision beats earlier"})
            tree[path] = {"content": item["content"], "task": task.key}
    return tree, collisions


def final_status(tasks: list[Task]) -> str:
    if any(t.status == TaskStatus.CANCELLED and t.error == billing.BUDGET_STOP_ERROR for t in tasks):
        return ExecutionStatus.BUDGET_EXCEEDED
    planned = [t for t in tasks if t.kind == "plan"]
    delivered = [t for t in planned if t.status == TaskStatus.SUCCEEDED]
    if len(delivered) == len(planned):
        return ExecutionStatus.COMPLETED
    return ExecutionStatus.PARTIAL if delivered else ExecutionStatus.FAILED


def quality_score(tasks: list[Task], conflicts: list[Conflict]) -> float:
    """Delivered share of the work, minus 0.1 per unresolved conflict and 0.05 per open high finding."""
    planned = [t for t in tasks if t.kind == "plan"]
    share = 1 - float(billing.undelivered_share(planned))
    unresolved = sum(1 for c in conflicts if c.status != "resolved")
    open_high = sum(
        1 for t in tasks if t.status == TaskStatus.SUCCEEDED
        for f in t.result.get("findings", []) if f.get("severity") in ("critical", "high") and not f.get("resolved")
    )
    return round(max(0.0, min(1.0, share - 0.1 * unresolved - 0.05 * open_high)), 2)


def synthesis_facts(execution: Execution, tasks: list[Task], conflicts: list[Conflict], status: str,
                    refund) -> dict:
    delivered = [f"{t.key} ({t.pool}): {t.result.get('summary') or t.description}" for t in tasks
                 if t.status == TaskStatus.SUCCEEDED]
    missing = [f"{t.key} ({t.pool}): {t.status} — {t.error or 'not delivered'}" for t in tasks
               if t.status != TaskStatus.SUCCEEDED]
    duration = execution.duration_sec or 0
    headline = {"completed": "Project complete", "partial": "Partial delivery", "failed": "Delivery failed",
                "cancelled": "Execution cancelled", "budget_exceeded": "Stopped at the budget"}[status]
    return {
        "headline": headline, "status": status, "delivered": delivered, "not_delivered": missing,
        "timeline": f"{duration:.0f}s in {execution.mode or 'parallel'} mode (serial estimate {execution.serial_estimate_sec or 0:.0f}s)",
        "cost": f"${execution.cost_usd:.2f} in model usage; project fee ${execution.fee_usd:.2f}",
        "refund": f"${refund:.2f}" if refund else "",
        "security": [f"{c.description}: {c.resolution}" for c in conflicts if c.status == "resolved"],
        "unresolved": [c.description for c in conflicts if c.status != "resolved"] + (
            [f"{t.key} failed - manual review needed" for t in tasks if t.status == TaskStatus.DEAD]
        ),
    }


def aggregate(execution_id: str) -> str | None:
    """Finish an execution in `aggregating`: merge, synthesize, settle. Returns the final status."""
    execution = Execution.objects.select_related("client").get(pk=execution_id)
    if execution.status != ExecutionStatus.AGGREGATING:
        return None
    tasks = list(execution.tasks.all())
    conflicts = list(execution.conflicts.all())
    status = final_status(tasks)
    _, collisions = merged_files(tasks)
    refund_preview = billing.refund_for(execution, status, tasks)
    facts = synthesis_facts(execution, tasks, conflicts, status, refund_preview)
    facts["file_collisions"] = collisions
    settings_row = EngineSettings.current()
    spec = llm.resolve(settings_row.synthesis_model or settings_row.pm_model)
    completion = None
    try:
        completion = llm.complete(spec, llm.LLMRequest(
            purpose="synthesis", system=SYNTHESIS_SYSTEM, prompt=synthesis_prompt(request=execution.message, facts=facts),
            timeout=120, meta={"facts": facts}, expected_output_tokens=600,
        ))
        response = completion.text
    except llm.LLMError as exc:
        log.warning("synthesis failed for %s: %s; using the plain summary", execution_id, exc)
        from pools.offline import synthesis_markdown

        response = synthesis_markdown(facts)
    return finish(execution, status, response=response, quality=quality_score(tasks, conflicts),
                  synthesis=(spec, completion) if completion else None)


def finish(execution: Execution, status: str, *, response: str, quality: float | None, synthesis=None,
           expected=ExecutionStatus.AGGREGATING) -> str | None:
    with transaction.atomic():
        if not cas_execution(execution.pk, expected, status=status, final_response=response, quality_score=quality,
                             finished_at=timezone.now()):
            return None
        if synthesis:
            billing.record_phase_usage(execution, "synthesis", 0, *synthesis)
        execution.refresh_from_db()
        refund = billing.settle(execution, status)
        events.emit(execution.pk, "execution.finished", payload={
            "status": status, "duration_sec": execution.duration_sec, "cost_usd": str(execution.cost_usd),
            "fee_usd": str(execution.fee_usd), "refund_usd": str(refund), "quality_score": quality,
        })
    log.info("PM Finished %s: %s in %.1fs, cost $%.4f, refund $%s", execution.pk, status,
             execution.duration_sec or 0, execution.cost_usd, refund)
    return status
