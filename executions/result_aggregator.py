"""Aggregation: the end of an execution. Once no task can make progress, the merged tree is
checked as a whole: against the plan's contract (`interfaces`), then by the integration gate
(`integration`). Either may start a fix round, and the execution goes back to executing until
the fixes are done. Then the tree is judged (final status, quality), the PM synthesizes the
client's answer (or the plain summary here stands in), and the execution is settled: its refund
by policy and its final event."""

import io
import logging
import re
import zipfile
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings
from pools.prompts import SYNTHESIS_SYSTEM, synthesis_prompt
from pools.storable import storable
from pools.verifiers.paths import path_problem, tree_clashes

from . import billing, events, integration, interfaces, merge_conflicts, projects, webhooks
from .conflicts import TREE_KINDS, close_open_conflicts
from .merge import merged_files
from .models import Conflict, Execution, Task
from .phase_lease import PhaseLease, release_phase
from .states import ConflictKind, ConflictStatus, ExecutionStatus, StopReason, TaskKind, TaskStatus
from .transitions import claim_phase, lock_execution, move_execution

log = logging.getLogger("openclaw.aggregator")

SYNTHESIS_TIMEOUT_SEC = 120
MAX_AGGREGATION_CLAIMS = 3  # claims of one round that may fail before the execution does
REOPENED, STOPPED, CHECKED = "reopened", "stopped", "checked"


def stopped_for_budget(tasks: list[Task]) -> bool:
    return any(t.status == TaskStatus.CANCELLED and t.stop_reason == StopReason.BUDGET for t in tasks)


def final_status(tasks: list[Task], conflicts: list[Conflict] = (), gate: dict | None = None) -> str:
    """`completed` only when every planned task delivered, no conflict is left unresolved and the
    integration gate did not fail; `partial` when something was delivered; else `failed`."""
    if stopped_for_budget(tasks):
        return ExecutionStatus.BUDGET_EXCEEDED
    planned = [t for t in tasks if t.kind == TaskKind.PLAN]
    delivered = [t for t in planned if t.status == TaskStatus.SUCCEEDED]
    if not delivered:
        return ExecutionStatus.FAILED
    unresolved = any(c.status != ConflictStatus.RESOLVED for c in conflicts)
    if len(delivered) == len(planned) and not unresolved and not integration.failed(gate or {}):
        return ExecutionStatus.COMPLETED
    return ExecutionStatus.PARTIAL


def quality_score(
    tasks: list[Task],
    conflicts: list[Conflict],
    contract_report: dict | None = None,
    gate: dict | None = None,
) -> float:
    """The quality of a delivery in [0, 1], from measured facts only:

        q = D × F × K × T × 0.85^U × 0.95^X, clamped to [0, 1], 2 decimals

    D: the delivered share of the planned work (by the server's weights, as refunds count it);
    F = 1 − min(0.5, 0.1·H + 0.02·M), H and M the open critical/high and medium findings (tools'
    and models') in delivered outputs, one per place (file and line); findings a resolved conflict
    settled do not count;
    K: the share of the contract checks that pass on the merged tree (1 without checks);
    T: the share of the integration gate's tests that pass (1 when it ran no test; 0 when it failed
    without a test failing, e.g. on a compile error; 1 when it could not run, which the
    `integration` object says);
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
    findings = 1 - min(0.5, 0.1 * len(places["high"]) + 0.02 * len(places["medium"]))
    report = contract_report or {}
    checks = report.get("passed", 0) / report["checks"] if report.get("checks") else 1.0
    score = delivered * findings * checks * tests_share(gate or {}) * 0.85**unresolved * 0.95**dead
    # Half up: 0.9 × 0.85 is 0.765, whose binary neighbour below would round down.
    return round(max(0.0, min(1.0, score)) + 1e-9, 2)


def tests_share(gate: dict) -> float:
    """T of the quality formula."""
    if not gate.get("ran"):
        return 1.0
    run = gate.get("passed", 0) + gate.get("failed", 0)
    if run:
        return gate.get("passed", 0) / run
    return 1.0 if gate.get("ok") else 0.0


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
    migrated = sum(
        len(report.get("migrations", []))
        for t in delivered
        for report in (t.result.get("verification", {}).get("migrations") or {}).values()
    )
    return (
        f"every output verified by real tools: {counted(files, 'file')} parsed, "
        f"{counted(len(scanned), 'Python file')} scanned with bandit, "
        f"{counted(schemas, 'schema')} applied to a scratch database"
        + (f", {counted(migrated, 'migration')} applied to the schema before it" if migrated else "")
    )


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def synthesis_facts(
    execution: Execution, tasks: list[Task], conflicts: list[Conflict], status: str, quality: float
) -> dict:
    """The facts the PM's client-facing answer is written from (and the offline answer's content).
    The money is not among them: `finish` appends the bill once the answer's own call is billed."""
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
    remediation = ""
    if follow_ups:
        agent_sec = sum(
            (t.finished_at - t.started_at).total_seconds()
            for t in follow_ups
            if t.started_at and t.finished_at
        )
        keys = ", ".join(t.key for t in follow_ups)
        remediation = (
            f"{counted(len(follow_ups), 'follow-up task')} for conflicts ({keys}): "
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
        "timeline": timeline(execution, delivered=bool(delivered)),
        "remediation": remediation,
        "security": [
            f"{c.description} → {c.resolution}"
            for c in conflicts
            if c.status == ConflictStatus.RESOLVED
            and c.kind in (ConflictKind.SECURITY_FINDING, ConflictKind.SCHEMA_REJECTED)
        ]
        + [verification_summary(tasks)],
        "agreement": [
            f"{c.description} → {c.resolution}"
            for c in conflicts
            if c.status == ConflictStatus.RESOLVED and c.kind in TREE_KINDS
        ],
        "contract": contract_summary(execution.contract_report),
        "integration": integration.summary_line(execution.integration),
        "unresolved": [
            f"{c.description}: {c.resolution}" for c in conflicts if c.status != ConflictStatus.RESOLVED
        ]
        + [f"{t.key} failed - manual review needed" for t in tasks if t.status == TaskStatus.DEAD]
        + [f"open finding: {item}" for item in open_high[:10]],
        "quality_score": quality,
    }


def timeline(execution: Execution, *, delivered: bool) -> str:
    """The wall clock against the serial estimate, for the answer's record and Slack's summary."""
    duration = execution.duration_sec or 0
    serial = execution.serial_estimate_sec or 0
    line = f"{duration:.0f}s wall clock in {execution.mode or 'parallel'} mode"
    if not serial:  # stopped before a plan estimated it
        return line
    if execution.mode == "serial":  # a serial run beating its own estimate is not a speed-up
        return f"{line} (estimated {serial:.0f}s)"
    line += f" vs {serial:.0f}s serial estimate"
    if serial > duration > 0 and delivered:  # nothing delivered is not faster
        line += f" ({100 * (1 - duration / serial):.0f}% faster)"
    return line


# The facts the server states itself, after the answer (`record_lines`): figures no model restates.
RECORD_FACTS = ("timeline", "remediation", "delivery", "quality_score", "integration", "contract")


def told(facts: dict) -> dict:
    """The facts the answer is written from: what was built and what is left, not the record."""
    return {k: v for k, v in facts.items() if k not in RECORD_FACTS}


def record_lines(facts: dict) -> str:
    """The record at the end of a client's answer, before its bill."""
    lines = []
    if facts.get("timeline"):
        lines.append(f"**Timeline:** {facts['timeline']}")
    if facts.get("remediation"):
        lines.append(f"**Remediation:** {facts['remediation']}")
    if facts.get("delivery"):
        lines.append(f"**Repository:** {facts['delivery']}")
    if facts.get("quality_score") is not None:
        lines.append(f"**Quality score:** {facts['quality_score']:.2f}")
    if facts.get("integration"):
        lines.append(f"**Integration:** {facts['integration']}")
    if facts.get("contract"):
        lines.append(f"**Contract:** {facts['contract']}")
    lines.append(f"**Status:** {facts.get('status', 'done')}")
    return "\n".join(lines)


def contract_summary(report: dict) -> str:
    if not report or not report.get("checks"):
        return ""
    return f"{report['passed']} of {report['checks']} contract checks pass on the merged project"


def plain_summary(facts: dict) -> str:
    """The client's answer in markdown without a model: the synthesis's stand-in when it fails."""
    lines = [f"## {facts.get('headline', 'Project delivered')}", ""]
    for item in facts.get("delivered", []):
        lines.append(f"- ✅ {item}")
    for item in facts.get("not_delivered", []):
        lines.append(f"- ❌ {item}")
    if facts.get("agreement"):
        lines += ["", "**Interfaces agreed:**"] + [f"- {s}" for s in facts["agreement"]]
    if facts.get("security"):
        lines += ["", "**Security measures:**"] + [f"- {s}" for s in facts["security"]]
    if facts.get("unresolved"):
        lines += ["", "**Needs manual review:**"] + [f"- {s}" for s in facts["unresolved"]]
    return "\n".join(lines).strip()


def aggregate(execution_id: str) -> str | None:
    """Finish an execution in `aggregating`: merge, synthesize, settle. Returns the final status.

    The worker renews the phase's lease while it works (`phase_lease`), so a killed worker is
    replaced within one lease. The synthesis call is billed whether or not this worker's answer is
    the one kept. An unexpected error gives the phase back for the reaper to resend; when the
    third claim of the round fails too, the execution ends `failed` with the reason instead of
    staying in aggregation. A lost database connection only gives the phase back."""
    claim = claim_phase(execution_id, ExecutionStatus.AGGREGATING, lease_sec=settings.OPENCLAW_LEASE_SEC)
    if claim is None:
        return None
    with PhaseLease(execution_id, ExecutionStatus.AGGREGATING, claim):
        try:
            return _aggregate(execution_id, claim)
        except Exception as exc:
            log.exception("aggregation of %s failed (claim %d)", execution_id, claim)
            if isinstance(exc, OperationalError | InterfaceError) or claim < MAX_AGGREGATION_CLAIMS:
                give_back(execution_id, claim)
                return None
            return fail_aggregation(execution_id, f"aggregation failed: {type(exc).__name__}: {exc}"[:500])


def give_back(execution_id: str, claim: int) -> None:
    connection.close()  # the error may have left this thread's connection unusable
    try:
        release_phase(execution_id, ExecutionStatus.AGGREGATING, claim)
    except DatabaseError:
        log.warning("could not give %s's aggregation back; its lease lapses instead", execution_id)


def fail_aggregation(execution_id: str, reason: str) -> str | None:
    """aggregating → failed with the reason, settled by the refund policy like any failure."""
    reason = storable(reason)  # it may quote an error's own words
    execution = Execution.objects.select_related("client").get(pk=execution_id)
    facts = {"headline": "Delivery failed", "status": ExecutionStatus.FAILED, "unresolved": [reason]}
    with transaction.atomic():
        Execution.objects.filter(pk=execution_id, status=ExecutionStatus.AGGREGATING).update(error=reason)
        return finish(
            execution, ExecutionStatus.FAILED, response=plain_summary(facts), quality=None, record=facts
        )


def _aggregate(execution_id: str, claim: int) -> str | None:
    execution = Execution.objects.select_related("client").get(pk=execution_id)
    if check_tree(execution, list(execution.tasks.all())) != CHECKED:
        return None
    close_open_conflicts(execution_id)
    execution.refresh_from_db()
    tasks = list(execution.tasks.all())
    delivery = ""
    failed_landing = False
    if execution.project:
        try:
            delivery = land_on_main(execution)
            if delivery is None:
                return None  # back to work: a merge conflict with main is being resolved
        except projects.ProjectError as exc:
            log.error("%s could not land on %s: %s", execution_id, execution.project, exc)
            failed_landing = True
            Execution.objects.filter(pk=execution_id).update(error=f"the project's repository: {exc}"[:500])
            delivery = f"Not delivered: the project's repository failed ({exc})."
    conflicts = list(execution.conflicts.all())
    status = (
        ExecutionStatus.FAILED if failed_landing else final_status(tasks, conflicts, execution.integration)
    )
    quality = quality_score(tasks, conflicts, execution.contract_report, execution.integration)
    facts = synthesis_facts(execution, tasks, conflicts, status, quality)
    if delivery:
        facts["delivery"] = delivery
    else:
        facts["file_collisions"] = merged_files(tasks)[1]
    if status == ExecutionStatus.BUDGET_EXCEEDED:
        # The budget is spent: no further model call, the summary is written without one.
        return finish(execution, status, response=plain_summary(told(facts)), quality=quality, record=facts)
    settings_row = EngineSettings.current()
    spec = llm.resolve(settings_row.synthesis_model or settings_row.pm_model)
    completion = None
    try:
        completion = llm.complete(
            spec,
            llm.LLMRequest(
                purpose="synthesis",
                system=SYNTHESIS_SYSTEM,
                prompt=synthesis_prompt(request=execution.message, facts=told(facts)),
                timeout=SYNTHESIS_TIMEOUT_SEC,
                meta={
                    "facts": told(facts),
                    "plain_summary": plain_summary(told(facts)),
                    "request": execution.message,
                },
                expected_output_tokens=600,
            ),
        )
        response = completion.text
    except llm.LLMError as exc:
        log.warning("synthesis failed for %s: %s; using the plain summary", execution_id, exc)
        response = plain_summary(told(facts))
    synthesis = (
        (billing.phase_call_index(claim, execution.retries, 0), spec, completion) if completion else None
    )
    outcome = finish(execution, status, response=response, quality=quality, synthesis=synthesis, record=facts)
    if outcome is None and synthesis:  # cancelled meanwhile: the call was made all the same
        billing.record_phase_usage(execution, "synthesis", *synthesis)
    return outcome


def check_tree(execution: Execution, tasks: list[Task]) -> str:
    """The merged tree, on top of the project's files where the execution started, checked as a
    whole: the contract, then the integration gate. Returns REOPENED
    when a fix round started (the execution is executing again), STOPPED when the execution left
    aggregation meanwhile (cancelled), else CHECKED. Nothing is fixed after a budget stop."""
    if stopped_for_budget(tasks):
        Execution.objects.filter(pk=execution.pk).update(
            integration={"ran": False, "ok": True, "reason": "stopped at the budget: not checked"}
        )
        return CHECKED
    # A follow-up is checked as it will land: its work on top of the project as it was.
    base = projects.base_files(execution)
    tree = interfaces.lineage_trees(tasks, base)
    report = interfaces.review(execution, tree, base)
    with transaction.atomic():
        if not still_aggregating(execution.pk):
            return STOPPED
        started = interfaces.settle(execution.pk, report)
        Execution.objects.filter(pk=execution.pk).update(contract_report=report.as_dict())
        events.emit(
            execution.pk,
            "execution.contract_checked",
            payload={"checks": report.checks, "passed": report.passed, "fixes": started},
        )
        if started:
            return reopen(execution.pk, started, "contract checks")
    files, owner_of, _ = tree
    gate = integration.run(files)  # the sandbox's run, with no lock held
    with transaction.atomic():
        if not still_aggregating(execution.pk):
            return STOPPED
        started = integration.settle(execution.pk, gate, files, owner_of)
        Execution.objects.filter(pk=execution.pk).update(integration=gate)
        events.emit(
            execution.pk,
            "execution.integration",
            payload={
                k: gate.get(k) for k in ("ran", "ok", "command", "exit_code", "passed", "failed", "reason")
            }
            | {"fixes": started},
        )
        if started:
            return reopen(execution.pk, started, "integration gate")
    log.info(
        "AGGREGATOR Checked %s: %d/%d contract checks pass; gate %s",
        execution.pk,
        report.passed,
        report.checks,
        ("passed" if gate.get("ok") else "failed") if gate.get("ran") else f"not run ({gate.get('reason')})",
    )
    return CHECKED


def still_aggregating(execution_id: str) -> bool:
    lock_execution(execution_id)
    return Execution.objects.filter(pk=execution_id, status=ExecutionStatus.AGGREGATING).exists()


def reopen(execution_id: str, fixes: list[str], reason: str) -> str:
    """aggregating → executing for a fix round; the fixes were added and are dispatched on commit."""
    move_execution(
        execution_id,
        ExecutionStatus.AGGREGATING,
        ExecutionStatus.EXECUTING,
        phase_lease_until=None,
        phase_claims=0,
        phase_sent_at=None,
    )
    events.emit(execution_id, "execution.reopened", payload={"reason": reason, "tasks": fixes})
    log.info("AGGREGATOR Reopened %s for %s: %s", execution_id, reason, ", ".join(fixes))
    return REOPENED


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


# The bill as `bill` writes it, at the end of an answer.
BILL_AT_END = re.compile(
    r"\*\*Cost:\*\* \$[\d.]+ in model usage; project fee \$[\d.]+(\n\*\*Refund:\*\* \$[\d.]+)?\Z"
)


# The record as `record_lines` ends it, then the bill if any, at the end of an answer.
RECORD_AT_END = re.compile(r"^\*\*Status:\*\* [a-z_]+(\n\n" + BILL_AT_END.pattern + r"|\Z)", re.MULTILINE)


def has_bill(answer: str) -> bool:
    """Whether a client's answer ends with its bill (a cancelled execution's has none)."""
    return BILL_AT_END.search(answer or "") is not None


def has_record(answer: str) -> bool:
    """Whether a client's answer ends with the server's record (an aggregated execution's does)."""
    return RECORD_AT_END.search(answer or "") is not None


def bill(execution: Execution, refund: Decimal) -> str:
    """The money lines of the client's answer, from the ledger as settled: written after the
    answer's own model call is billed, so they agree with the API and the invoice to the cent."""
    line = f"**Cost:** ${execution.cost_usd:.2f} in model usage; project fee ${execution.fee_usd:.2f}"
    return line + (f"\n**Refund:** ${refund:.2f}" if refund else "")


def finish(
    execution: Execution,
    status: str,
    *,
    response: str,
    quality: float | None,
    synthesis=None,
    record: dict | None = None,
    expected=ExecutionStatus.AGGREGATING,
) -> str | None:
    """Settle the execution in `status` with the client's answer: `response`, then the `record`
    (the facts the server states itself, the timeline as settled) and the bill, both from the
    database in the transaction that settles it."""
    with transaction.atomic():
        if not move_execution(
            execution.pk,
            expected,
            status,
            quality_score=quality,
            finished_at=timezone.now(),
        ):
            return None
        close_open_conflicts(execution.pk)  # a cancelled execution's rounds end here
        if synthesis:
            billing.record_phase_usage(execution, "synthesis", *synthesis)
        execution.refresh_from_db()
        refund = billing.settle(execution, status)
        if record is not None:
            if "timeline" in record:
                record = {**record, "timeline": timeline(execution, delivered=bool(record.get("delivered")))}
            response = f"{response.rstrip()}\n\n{record_lines(record)}"
        # A cancel's calls in flight are billed as they return, after this: its bill is the invoice.
        if status != ExecutionStatus.CANCELLED:
            response = f"{response.rstrip()}\n\n{bill(execution, refund)}".lstrip()
        Execution.objects.filter(pk=execution.pk).update(final_response=response)
        execution.final_response = response
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
        webhooks.webhook_delivery_create(execution=execution, status=status)
    log.info(
        "PM Finished %s: %s in %.1fs, cost $%.4f, refund $%s",
        execution.pk,
        status,
        execution.duration_sec or 0,
        execution.cost_usd,
        refund,
    )
    return status
