"""Aggregation: the end of an execution. Once no task can make progress, the merged tree is
judged (final status, quality), the PM synthesizes the client's answer (or the plain summary
here stands in), and the execution is settled: its refund by policy and its final event."""

import io
import logging
import zipfile

from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings
from pools.prompts import SYNTHESIS_SYSTEM, synthesis_prompt
from pools.verifiers.paths import path_problem, tree_clashes

from . import billing, events, merge_conflicts, projects
from .conflicts import close_open_conflicts
from .merge import merged_files
from .models import Conflict, Execution, Task
from .states import ConflictKind, ConflictStatus, ExecutionStatus, StopReason, TaskKind, TaskStatus
from .transitions import claim_phase, move_execution

log = logging.getLogger("openclaw.aggregator")

SYNTHESIS_TIMEOUT_SEC = 120


def final_status(tasks: list[Task]) -> str:
    if any(t.status == TaskStatus.CANCELLED and t.stop_reason == StopReason.BUDGET for t in tasks):
        return ExecutionStatus.BUDGET_EXCEEDED
    planned = [t for t in tasks if t.kind == TaskKind.PLAN]
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
    planned = [t for t in tasks if t.kind == TaskKind.PLAN]
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
    unresolved = sum(1 for c in conflicts if c.status != ConflictStatus.RESOLVED)
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
        f"every output verified by real tools: {files} files parsed, "
        f"{len(scanned)} Python files scanned with "
        f"bandit, {schemas} schema(s) applied to a scratch database"
    )


def synthesis_facts(
    execution: Execution, tasks: list[Task], conflicts: list[Conflict], status: str, refund, quality: float
) -> dict:
    """The facts the PM's client-facing answer is written from (and the offline answer's content)."""
    planned = [t for t in tasks if t.kind == TaskKind.PLAN]
    follow_ups = [t for t in tasks if t.kind != TaskKind.PLAN]
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
            if c.status == ConflictStatus.RESOLVED
            and c.kind not in (ConflictKind.FILE_COLLISION, ConflictKind.MERGE)
        ]
        + [verification_summary(tasks)],
        "unresolved": [
            f"{c.description}: {c.resolution}" for c in conflicts if c.status != ConflictStatus.RESOLVED
        ]
        + [f"{t.key} failed - manual review needed" for t in tasks if t.status == TaskStatus.DEAD]
        + [f"open finding: {item}" for item in open_high[:10]],
        "quality_score": quality,
    }


def plain_summary(facts: dict) -> str:
    """The client's answer in markdown without a model: the synthesis's stand-in when it fails."""
    lines = [f"## {facts.get('headline', 'Project delivered')}", ""]
    for item in facts.get("delivered", []):
        lines.append(f"- ✅ {item}")
    for item in facts.get("not_delivered", []):
        lines.append(f"- ❌ {item}")
    lines.append("")
    if facts.get("timeline"):
        lines.append(f"**Timeline:** {facts['timeline']}")
    if facts.get("cost"):
        lines.append(f"**Cost:** {facts['cost']}")
    if facts.get("refund"):
        lines.append(f"**Refund:** {facts['refund']}")
    if facts.get("remediation"):
        lines.append(f"**Remediation:** {facts['remediation']}")
    if facts.get("delivery"):
        lines.append(f"**Repository:** {facts['delivery']}")
    if facts.get("quality_score") is not None:
        lines.append(f"**Quality score:** {facts['quality_score']:.2f}")
    if facts.get("security"):
        lines += ["", "**Security measures:**"] + [f"- {s}" for s in facts["security"]]
    if facts.get("unresolved"):
        lines += ["", "**Needs manual review:**"] + [f"- {s}" for s in facts["unresolved"]]
    lines += ["", f"**Status:** {facts.get('status', 'done')}"]
    return "\n".join(lines)


def aggregate(execution_id: str) -> str | None:
    """Finish an execution in `aggregating`: merge, synthesize, settle. Returns the final status.

    Like planning, the worker holds the phase's lease for the length of the synthesis call, and
    the call is billed whether or not this worker's answer is the one kept."""
    claim = claim_phase(execution_id, ExecutionStatus.AGGREGATING, lease_sec=SYNTHESIS_TIMEOUT_SEC + 30)
    if claim is None:
        return None
    execution = Execution.objects.select_related("client").get(pk=execution_id)
    close_open_conflicts(execution_id)
    tasks = list(execution.tasks.all())
    status = final_status(tasks)
    delivery = ""
    if execution.project:
        try:
            delivery = land_on_main(execution)
            if delivery is None:
                return None  # back to work: a merge conflict with main is being resolved
        except projects.ProjectError as exc:
            log.error("%s could not land on %s: %s", execution_id, execution.project, exc)
            status = ExecutionStatus.FAILED
            Execution.objects.filter(pk=execution_id).update(error=f"the project's repository: {exc}"[:500])
            delivery = f"Not delivered: the project's repository failed ({exc})."
    conflicts = list(execution.conflicts.all())
    refund_preview = billing.refund_for(execution, status, tasks)
    quality = quality_score(tasks, conflicts)
    facts = synthesis_facts(execution, tasks, conflicts, status, refund_preview, quality)
    if delivery:
        facts["delivery"] = delivery
    else:
        facts["file_collisions"] = merged_files(tasks)[1]
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
                timeout=SYNTHESIS_TIMEOUT_SEC,
                meta={"facts": facts, "plain_summary": plain_summary(facts)},
                expected_output_tokens=600,
            ),
        )
        response = completion.text
    except llm.LLMError as exc:
        log.warning("synthesis failed for %s: %s; using the plain summary", execution_id, exc)
        response = plain_summary(facts)
    synthesis = (
        (billing.phase_call_index(claim, execution.retries, 0), spec, completion) if completion else None
    )
    outcome = finish(execution, status, response=response, quality=quality, synthesis=synthesis)
    if outcome is None and synthesis:  # cancelled meanwhile: the call was made all the same
        billing.record_phase_usage(execution, "synthesis", *synthesis)
    return outcome


def land_on_main(execution: Execution) -> str | None:
    """Land the execution's work on its project's main. Returns the delivery line of the client's
    answer (the clone command and the diff's size), or None when the execution went back to work
    to resolve a merge conflict with what another execution landed meanwhile. Once those rounds
    are spent, it lands with its own version of the conflicting lines, and says so."""
    landing = projects.land(execution, stop_on_main_conflict=True)
    if not landing.commit:
        with transaction.atomic():
            if merge_conflicts.resolve_with_main(execution, landing):
                return None
        landing = projects.land(execution)
    if landing.conflicts:
        with transaction.atomic():
            merge_conflicts.record_landing_conflicts(execution, landing)
    _, stats = projects.execution_diff(execution)
    return (
        f"`git clone {projects.clone_url(execution.project)}` (main at {landing.commit[:12]}, "
        f"tag exec-{execution.pk}): {stats['files_changed']} files changed, "
        f"+{stats['insertions']} −{stats['deletions']}"
    )


def project_tree(execution: Execution) -> dict[str, dict]:
    """{path: {"content"}}: the tree at `result_commit` (before landing: the work merged so far onto
    the base); for an execution from before projects lived in git, the merge rules' tree."""
    files = projects.result_files(execution) if execution.project else None
    if files is None:
        return merged_files(list(execution.tasks.all()))[0]
    return {path: {"content": content} for path, content in files.items()}


def artifacts_zip(execution: Execution) -> bytes:
    """The project tree as a zip archive (paths relative to the project root).

    Paths that no checkout could hold together are left out: verification fails them within one
    output, but two tasks may still write `App.py` and `app.py`, or a file and a folder of one name.
    The first in path order is kept."""
    tree = project_tree(execution)
    clashing = {path for path, _ in tree_clashes(list(tree))}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tree):
            if path_problem(path) is None and path not in clashing:
                archive.writestr(path, tree[path]["content"])
    if clashing:
        log.warning("artifacts of %s leave out clashing paths: %s", execution.pk, ", ".join(sorted(clashing)))
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
        if not move_execution(
            execution.pk,
            expected,
            status,
            final_response=response,
            quality_score=quality,
            finished_at=timezone.now(),
        ):
            return None
        close_open_conflicts(execution.pk)  # a cancelled execution's rounds end here
        if synthesis:
            billing.record_phase_usage(execution, "synthesis", *synthesis)
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
