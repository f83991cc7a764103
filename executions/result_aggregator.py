"""Aggregation: merge the agents' files into one project tree, synthesize, settle the execution."""

import io
import logging
import zipfile

from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings
from pools.prompts import SYNTHESIS_SYSTEM, synthesis_prompt
from pools.verifiers import path_problem

from . import billing, events
from .models import Conflict, Execution, ExecutionStatus, Task, TaskStatus
from .parallel_executor import cas_execution

log = logging.getLogger("openclaw.aggregator")

# Which version of a path the merged tree keeps: remediation beats original, later revision beats
# earlier; otherwise the later result wins.
KIND_ORDER = {"plan": 0, "revision": 1, "remediation": 2, "reaudit": 3}
COLLISION_RULE = "remediation beats original, later revision beats earlier, otherwise the later result wins"
# Kinds whose output replaces their parent task's (the parent is the lineage's original).
SUPERSEDING_KINDS = ("remediation", "revision")


def on_task_succeeded(task: Task) -> None:
    """Detect and resolve conflicts as soon as a result arrives (inside the success transaction)."""
    from .conflicts import on_result

    on_result(task)


def merge_order(task: Task) -> tuple:
    return KIND_ORDER.get(task.kind, 0), task.finished_at or timezone.now(), task.pk


def lineage_key(task: Task, by_pk: dict[int, Task]) -> str:
    """The key of the original task a remediation or revision replaces (the task's own otherwise)."""
    parent = by_pk.get(task.parent_id) if task.kind in SUPERSEDING_KINDS else None
    return parent.key if parent else task.key


def merged_files(tasks: list[Task]) -> tuple[dict[str, dict], list[dict]]:
    """The project tree {path: {content, task, lineage}} and the collisions between lineages.

    Each lineage counts with its latest version of a path (a remediation or revision replaces its
    original's file, which is what it is for); when several lineages write one path with different
    content, COLLISION_RULE picks the version kept and each other one is a collision.
    """
    by_pk = {t.pk: t for t in tasks}
    versions: dict[str, dict[str, tuple[tuple, dict]]] = {}
    for task in sorted((t for t in tasks if t.status == TaskStatus.SUCCEEDED), key=merge_order):
        lineage = lineage_key(task, by_pk)
        for item in task.result.get("files", []):
            entry = {"content": item["content"], "task": task.key, "lineage": lineage}
            versions.setdefault(item["path"], {})[lineage] = (merge_order(task), entry)
    tree: dict[str, dict] = {}
    collisions = []
    for path, by_lineage in versions.items():
        ranked = [entry for _, entry in sorted(by_lineage.values(), key=lambda pair: pair[0])]
        tree[path] = kept = ranked[-1]
        collisions += [
            {"path": path, "kept": kept["task"], "replaced": other["task"], "rule": COLLISION_RULE}
            for other in ranked[:-1]
            if other["content"] != kept["content"]
        ]
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
    """The quality of a delivery in [0, 1], from verifier results, conflicts and dead tasks:

        q = D × (1 − min(0.5, 0.1·H + 0.02·M)) − 0.15·U − 0.05·X, clamped to [0, 1], 2 decimals

    D: the delivered share of the planned work (by estimated duration, as refunds count it);
    H, M: open critical/high and medium findings (tools' and models') in delivered outputs, one per
    place (file and line); findings a resolved conflict settled do not count;
    U: conflicts not resolved; X: dead tasks of any kind (planned, remediation, re-audit, revision).
    """
    planned = [t for t in tasks if t.kind == "plan"]
    delivered = 1 - float(billing.undelivered_share(planned))
    places: dict[str, set] = {"high": set(), "medium": set()}
    for task in tasks:
        if task.status != TaskStatus.SUCCEEDED:
            continue
        for finding in task.result.get("findings", []):
            bucket = {"critical": "high", "high": "high", "medium": "medium"}.get(finding.get("severity"))
            if bucket and not finding.get("resolved"):
                place = (
                    (finding.get("file"), finding.get("line"))
                    if finding.get("line")
                    else (finding.get("file"), finding.get("title"))
                )
                places[bucket].add(place)
    unresolved = sum(1 for c in conflicts if c.status != "resolved")
    dead = sum(1 for t in tasks if t.status == TaskStatus.DEAD)
    penalty = min(0.5, 0.1 * len(places["high"]) + 0.02 * len(places["medium"]))
    return round(max(0.0, min(1.0, delivered * (1 - penalty) - 0.15 * unresolved - 0.05 * dead)), 2)


def verification_summary(tasks: list[Task]) -> str:
    """What the tools checked, in one line for the client."""
    delivered = [t for t in tasks if t.status == TaskStatus.SUCCEEDED]
    files = sum(t.result.get("verification", {}).get("files_checked", 0) for t in delivered)
    scanned = {
        path
        for t in delivered
        for path in t.result.get("verification", {}).get("bandit", {}).get("scanned", [])
    }
    schemas = sum(len(t.result.get("verification", {}).get("schema") or {}) for t in delivered)
    return (
        f"every output verified by real tools: {files} files parsed, {len(scanned)} Python files scanned with "
        f"bandit, {schemas} schema(s) applied to a scratch database"
    )


def synthesis_facts(
    execution: Execution, tasks: list[Task], conflicts: list[Conflict], status: str, refund, quality: float
) -> dict:
    """The facts the PM's client-facing answer is written from (and the offline answer's content)."""
    planned = [t for t in tasks if t.kind == "plan"]
    follow_ups = [t for t in tasks if t.kind != "plan"]
    delivered = [
        f"{t.key} ({t.pool}): {t.result.get('summary') or t.description}"
        for t in planned
        if t.status == TaskStatus.SUCCEEDED
    ]
    missing = [
        f"{t.key} ({t.pool}): {t.status} — {t.error or 'not delivered'}"
        for t in planned
        if t.status != TaskStatus.SUCCEEDED
    ]
    duration = execution.duration_sec or 0
    serial = execution.serial_estimate_sec or 0
    timeline = (
        f"{duration:.0f}s wall clock in {execution.mode or 'parallel'} mode vs {serial:.0f}s serial estimate"
    )
    if serial > duration > 0:
        timeline += f" ({100 * (1 - duration / serial):.0f}% faster)"
    remediation = ""
    if follow_ups:
        agent_sec = sum(
            (t.finished_at - t.started_at).total_seconds()
            for t in follow_ups
            if t.started_at and t.finished_at
        )
        remediation = (
            f"{len(follow_ups)} follow-up task(s) for conflicts ({', '.join(t.key for t in follow_ups)}): "
            f"{agent_sec:.0f}s of agent time, ${sum(t.cost_usd for t in follow_ups):.2f} of the model usage"
        )
    open_high = sorted(
        {
            f"{f['title']} ({f.get('file') or 'general'})"
            for t in tasks
            if t.status == TaskStatus.SUCCEEDED
            for f in t.result.get("findings", [])
            if f.get("severity") in ("critical", "high") and not f.get("resolved")
        }
    )
    headline = {
        "completed": "Project complete",
        "partial": "Partial delivery",
        "failed": "Delivery failed",
        "cancelled": "Execution cancelled",
        "budget_exceeded": "Stopped at the budget",
    }[status]
    return {
        "headline": headline,
        "status": status,
        "delivered": delivered,
        "not_delivered": missing,
        "timeline": timeline,
        "remediation": remediation,
        "cost": f"${execution.cost_usd:.2f} in model usage; project fee ${execution.fee_usd:.2f}",
        "refund": f"${refund:.2f}" if refund else "",
        "security": [
            f"{c.description} → {c.resolution}"
            for c in conflicts
            if c.status == "resolved" and c.kind != "file_collision"
        ]
        + [verification_summary(tasks)],
        "unresolved": [f"{c.description}: {c.resolution}" for c in conflicts if c.status != "resolved"]
        + [f"{t.key} failed - manual review needed" for t in tasks if t.status == TaskStatus.DEAD]
        + [f"open finding: {item}" for item in open_high[:10]],
        "quality_score": quality,
    }


def aggregate(execution_id: str) -> str | None:
    """Finish an execution in `aggregating`: merge, synthesize, settle. Returns the final status."""
    from .conflicts import close_open_conflicts

    execution = Execution.objects.select_related("client").get(pk=execution_id)
    if execution.status != ExecutionStatus.AGGREGATING:
        return None
    close_open_conflicts(execution_id)
    tasks = list(execution.tasks.all())
    conflicts = list(execution.conflicts.all())
    status = final_status(tasks)
    _, collisions = merged_files(tasks)
    refund_preview = billing.refund_for(execution, status, tasks)
    quality = quality_score(tasks, conflicts)
    facts = synthesis_facts(execution, tasks, conflicts, status, refund_preview, quality)
    facts["file_collisions"] = collisions
    settings_row = EngineSettings.current()
    spec = llm.resolve(settings_row.synthesis_model or settings_row.pm_model)
    completion = None
    try:
        completion = llm.complete(
            spec,
            llm.LLMRequest(
                purpose="synthesis",
                system=SYNTHESIS_SYSTEM,
                prompt=synthesis_prompt(request=execution.message, facts=facts),
                timeout=120,
                meta={"facts": facts},
                expected_output_tokens=600,
            ),
        )
        response = completion.text
    except llm.LLMError as exc:
        log.warning("synthesis failed for %s: %s; using the plain summary", execution_id, exc)
        from pools.offline import synthesis_markdown

        response = synthesis_markdown(facts)
    return finish(
        execution,
        status,
        response=response,
        quality=quality,
        synthesis=(spec, completion) if completion else None,
    )


def artifacts_zip(execution: Execution) -> bytes:
    """The merged project tree as a zip archive (paths relative to the project root)."""
    tree, _ = merged_files(list(execution.tasks.all()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tree):
            if path_problem(path) is None:  # verification failed such outputs; never write them
                archive.writestr(path.replace("\\", "/"), tree[path]["content"])
    return buffer.getvalue()


def finish(
    execution: Execution,
    status: str,
    *,
    response: str,
    quality: float | None,
    synthesis=None,
    expected=ExecutionStatus.AGGREGATING,
) -> str | None:
    with transaction.atomic():
        if not cas_execution(
            execution.pk,
            expected,
            status=status,
            final_response=response,
            quality_score=quality,
            finished_at=timezone.now(),
        ):
            return None
        from .conflicts import close_open_conflicts

        close_open_conflicts(execution.pk)  # a cancelled execution's rounds end here
        if synthesis:
            billing.record_phase_usage(execution, "synthesis", 0, *synthesis)
        execution.refresh_from_db()
        refund = billing.settle(execution, status)
        events.emit(
            execution.pk,
            "execution.finished",
            payload={
                "status": status,
                "duration_sec": execution.duration_sec,
                "cost_usd": str(execution.cost_usd),
                "fee_usd": str(execution.fee_usd),
                "refund_usd": str(refund),
                "quality_score": quality,
            },
        )
    log.info(
        "PM Finished %s: %s in %.1fs, cost $%.4f, refund $%s",
        execution.pk,
        status,
        execution.duration_sec or 0,
        execution.cost_usd,
        refund,
    )
    return status
