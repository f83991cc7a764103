"""Conflicts between agent outputs: detected as results arrive, resolved in bounded rounds.

Everything here runs inside the transaction that records a task's success
(`attempts.attempt_succeed`), so the follow-up tasks exist before anyone can decide
the execution is done, and no dependent ever reads a schema before its rejection is known.

Pools are matched by role (`PoolRole`), never by name.

- `security_finding`: a critical or high finding (the model's or bandit's) against files of a
  codegen-role task → a remediation task (in the code's pool; the findings and the flagged files'
  current content) and a re-audit (the auditor's pool, else a security-role pool, blocked by the
  remediation). Repeated up to
  `EngineSettings.remediation_max_rounds`; resolved only when the re-audit and the verifiers find
  nothing critical or high in those files, else unresolved. Raised by the audit that read the
  code, or, for code no planned audit reads, by bandit's own findings on it.
- `schema_rejected`: `check_schema` rejected a database output (it does not apply, or foreign keys
  lack an index) → a revision task in the schema's pool, as many rounds as remediation. Dependents
  that have not started wait for the revision; every dependent reads the lineage's latest version.
- `file_collision`: two lineages write one path with different content → decided by
  `merge.COLLISION_RULE` (remediation beats original, later revision beats earlier)
  and recorded as resolved.

A remediation or revision is the `parent`'s successor: the merged tree and the dependents see the
parent's files overlaid with its successors'.
"""

import logging

from django.utils import timezone

from pools.models import EngineSettings, PoolRole, WorkerPool
from pools.verification import BLOCKING_SEVERITIES, SEVERITY_RANK

from . import events, sql
from .dispatch import dispatch_after_commit
from .merge import COLLISION_RULE, KIND_ORDER, lineage_key, merged_files
from .models import Conflict, Task
from .states import CONFLICT_OPEN, SUPERSEDING_KINDS, ConflictKind, ConflictStatus, TaskKind, TaskStatus
from .task_graph import add_tasks
from .transitions import move_conflict

log = logging.getLogger("openclaw.aggregator")

MAX_KEY_CHARS = 40


def on_result(task: Task) -> None:
    """Everything a newly succeeded task's result may start, settle or collide with."""
    if task.kind == TaskKind.REAUDIT:
        settle_reaudit(task)
    elif task.role == PoolRole.SECURITY:
        flag_audited_code(task)
    elif task.role == PoolRole.CODEGEN and task.kind == TaskKind.PLAN:
        flag_unaudited_code(task)
    if task.kind == TaskKind.REVISION and task.context.get("conflict"):
        settle_revision(task)
    elif task.result.get("verification", {}).get("schema_accepted") is False:
        reject_schema(task)
    if not task.commit:  # results in git are merged three-way instead (`merge_conflicts`)
        record_collisions(task)


# ---------------------------------------------------------------- helpers


def blocking(findings: list[dict], paths: set[str] | None = None) -> list[dict]:
    """Open critical/high findings, optionally only those against the given paths."""
    return [
        f
        for f in findings
        if f.get("severity") in BLOCKING_SEVERITIES
        and not f.get("resolved")
        and (paths is None or f.get("file") in paths)
    ]


def headline(findings: list[dict]) -> str:
    """The finding to name a conflict by: the most severe, the model's wording before a tool's."""
    if not findings:
        return "unspecified problems"
    first = sorted(
        findings, key=lambda f: (-SEVERITY_RANK.get(f.get("severity"), 0), f.get("source") != "model")
    )[0]
    return first["title"] + (f" (+{len(findings) - 1} more)" if len(findings) > 1 else "")


def lineage_files(root: Task) -> dict[str, str]:
    """The current files of a task's lineage: its own overlaid with its succeeded successors'."""
    versions = [root] + list(
        Task.objects.filter(parent=root, kind__in=SUPERSEDING_KINDS, status=TaskStatus.SUCCEEDED).order_by(
            "finished_at", "pk"
        )
    )
    files: dict[str, str] = {}
    for version in versions:
        for path in version.result.get("removed", []):
            files.pop(path, None)
        files.update((f["path"], f["content"]) for f in version.result.get("files", []))
    return files


def follow_up_key(execution_id: str, base: str, label: str, number: int, conflict: Conflict) -> str:
    for key in (f"{base}_{label}{number}", f"c{conflict.pk}_{label}{number}"):
        if len(key) <= MAX_KEY_CHARS and not Task.objects.filter(execution_id=execution_id, key=key).exists():
            return key
    return f"c{conflict.pk}_{label}{number}_{timezone.now():%H%M%S%f}"[:MAX_KEY_CHARS]


def pool_timeout(pool: str, default: int) -> int:
    return WorkerPool.objects.filter(name=pool).values_list("timeout_sec", flat=True).first() or default


def pool_for_role(role: str) -> str | None:
    """The pool that does this role's work (the first enabled one by name), if any."""
    return (
        WorkerPool.objects.filter(role=role, enabled=True)
        .order_by("name")
        .values_list("name", flat=True)
        .first()
    )


def add_follow_ups(execution_id: str, tasks: list[dict]) -> None:
    """Add a conflict's follow-up tasks and dispatch them once committed."""
    created = add_tasks(execution_id, tasks)
    dispatch_after_commit(t.pool for t in created)


def detect(execution_id: str, kind: str, between: list[str], description: str, details: dict) -> Conflict:
    conflict = Conflict.objects.create(
        execution_id=execution_id,
        kind=kind,
        between=between,
        description=description,
        details=details,
        status=ConflictStatus.DETECTED,
    )
    events.emit(
        execution_id,
        "conflict.detected",
        task_key=between[-1],
        payload={"conflict": conflict.pk, "kind": kind, "between": between, "description": description},
    )
    log.warning("AGGREGATOR Conflict: %s execution=%s tasks=%s", description, execution_id, ",".join(between))
    return conflict


def mark_resolving(conflict: Conflict, round_no: int, new_tasks: list[str]) -> None:
    details = {**conflict.details, "tasks": conflict.details.get("tasks", []) + new_tasks}
    move_conflict(conflict.pk, CONFLICT_OPEN, ConflictStatus.RESOLVING, rounds=round_no, details=details)
    conflict.status, conflict.rounds, conflict.details = ConflictStatus.RESOLVING, round_no, details
    events.emit(
        conflict.execution_id,
        "conflict.resolving",
        task_key=new_tasks[0],
        payload={"conflict": conflict.pk, "kind": conflict.kind, "round": round_no, "tasks": new_tasks},
    )
    log.info(
        "AGGREGATOR Resolving: %s, round %d: %s execution=%s",
        conflict.description,
        round_no,
        " then ".join(new_tasks),
        conflict.execution_id,
    )


def resolve(conflict: Conflict, resolution: str, merged: str, *, mark_paths: set[str] | None = None) -> None:
    """→ resolved (once); the findings it settled stop counting as open."""
    unsettled = [ConflictStatus.DETECTED, ConflictStatus.RESOLVING, ConflictStatus.UNRESOLVED]
    if not move_conflict(
        conflict.pk, unsettled, ConflictStatus.RESOLVED, resolution=resolution, resolved_at=timezone.now()
    ):
        return
    if mark_paths:
        mark_findings_resolved(
            conflict.execution_id, conflict.details.get("tasks", []), mark_paths, conflict.pk
        )
    events.emit(
        conflict.execution_id,
        "conflict.resolved",
        task_key=conflict.between[-1],
        payload={
            "conflict": conflict.pk,
            "kind": conflict.kind,
            "between": conflict.between,
            "resolution": resolution,
            "rounds": conflict.rounds,
        },
    )
    log.info(
        "AGGREGATOR Merged: %s execution=%s tasks=%s",
        merged,
        conflict.execution_id,
        ",".join(conflict.between),
    )


def give_up(conflict: Conflict, reason: str) -> bool:
    """→ unresolved: no further round; the synthesis reports it for manual review."""
    if not move_conflict(conflict.pk, CONFLICT_OPEN, ConflictStatus.UNRESOLVED, resolution=reason):
        return False
    events.emit(
        conflict.execution_id,
        "conflict.unresolved",
        task_key=conflict.between[-1],
        payload={
            "conflict": conflict.pk,
            "kind": conflict.kind,
            "between": conflict.between,
            "reason": reason,
            "rounds": conflict.rounds,
        },
    )
    log.warning(
        "AGGREGATOR Unresolved: %s: %s execution=%s", conflict.description, reason, conflict.execution_id
    )
    return True


def mark_findings_resolved(execution_id: str, keys: list[str], paths: set[str], conflict_id: int) -> None:
    for task in Task.objects.filter(execution_id=execution_id, key__in=keys, status=TaskStatus.SUCCEEDED):
        findings = [
            {**f, "resolved": True, "resolved_by": conflict_id}
            if f.get("severity") in BLOCKING_SEVERITIES and f.get("file") in paths
            else f
            for f in task.result.get("findings", [])
        ]
        if findings != task.result.get("findings", []):
            Task.objects.filter(pk=task.pk).update(result={**task.result, "findings": findings})


def max_rounds() -> int:
    return EngineSettings.current().remediation_max_rounds


# ---------------------------------------------------------------- security findings → remediation


def flag_audited_code(audit: Task) -> None:
    """An audit's critical/high findings against files of the codegen lineages it read."""
    owners: dict[str, str] = {}
    for item in audit.result.get("inputs", []):
        if item.get("role") == PoolRole.CODEGEN:
            for path in item.get("paths", []):
                owners.setdefault(path, item["key"])
    flagged: dict[str, list[dict]] = {}
    for finding in blocking(audit.result.get("findings", [])):
        code_key = owners.get(finding.get("file"))
        if code_key:
            flagged.setdefault(code_key, []).append(finding)
    for code_key, findings in flagged.items():
        raise_security_conflict(audit, code_key, findings)


def flag_unaudited_code(task: Task) -> None:
    """bandit's critical/high findings on code that no planned audit will read."""
    findings = blocking(task.result.get("findings", []), {f["path"] for f in task.result.get("files", [])})
    if not findings:
        return
    audits = Task.objects.filter(execution_id=task.execution_id, role=PoolRole.SECURITY).values_list(
        "blocked_by", flat=True
    )
    if any(task.key in deps for deps in audits):
        return  # the audit reads this code with bandit too, and raises what it finds
    raise_security_conflict(task, task.key, findings)


def raise_security_conflict(source: Task, code_key: str, findings: list[dict]) -> None:
    for conflict in Conflict.objects.filter(
        execution_id=source.execution_id, kind=ConflictKind.SECURITY_FINDING, status__in=CONFLICT_OPEN
    ):
        if conflict.details.get("code") == code_key:
            # A round is under way for this code; its re-audit reads the files again.
            conflict.details["findings"] = conflict.details.get("findings", []) + findings
            Conflict.objects.filter(pk=conflict.pk).update(details=conflict.details)
            return
    paths = sorted({f["file"] for f in findings})
    between = [source.key, code_key] if source.key != code_key else [code_key]
    finder = "Security" if source.role == PoolRole.SECURITY else "bandit"
    conflict = detect(
        source.execution_id,
        ConflictKind.SECURITY_FINDING,
        between,
        f"{finder} vs CodeGen on {headline(findings)} in {', '.join(paths)}",
        {
            "code": code_key,
            "auditor": source.key,
            "paths": paths,
            "findings": findings,
            "tasks": list(between),
        },
    )
    start_remediation(conflict, findings)


def start_remediation(conflict: Conflict, findings: list[dict]) -> None:
    """One round: fix (codegen) then re-audit (security); or unresolved once the rounds are spent."""
    if conflict.rounds >= max_rounds():
        give_up(conflict, f"still open after {conflict.rounds} remediation round(s): {headline(findings)}")
        return
    execution_id = conflict.execution_id
    code = Task.objects.get(execution_id=execution_id, key=conflict.details["code"])
    auditor = Task.objects.filter(execution_id=execution_id, key=conflict.details.get("auditor")).first()
    round_no = conflict.rounds + 1
    files = lineage_files(code)
    paths = conflict.details["paths"]
    fix_key = follow_up_key(execution_id, code.key, "fix", round_no, conflict)
    audit_key = follow_up_key(execution_id, code.key, "reaudit", round_no, conflict)
    problem = headline(findings)
    # The auditor's pool re-audits; for bandit's own findings (no audit read the code), a security pool.
    audited = auditor is not None and auditor.role == PoolRole.SECURITY
    audit_pool = auditor.pool if audited else (pool_for_role(PoolRole.SECURITY) or code.pool)
    add_follow_ups(
        execution_id,
        [
            {
                "id": fix_key,
                "pool": code.pool,
                "kind": TaskKind.REMEDIATION,
                "parent_id": code.pk,
                "priority": 1,
                "description": (
                    f"Fix {problem} in {', '.join(paths)} (remediation round {round_no} of {code.key})"
                ),
                "timeout_sec": pool_timeout(code.pool, code.timeout_sec),
                "blocked_by": [],
                "soft_deps": [],
                "context": {
                    "conflict": conflict.pk,
                    "round": round_no,
                    "findings": findings,
                    "target_files": [{"path": p, "content": files[p]} for p in paths if p in files],
                },
                "expected_sec": code.expected_sec,
            },
            {
                "id": audit_key,
                "pool": audit_pool,
                "kind": TaskKind.REAUDIT,
                "parent_id": auditor.pk if auditor else None,
                "priority": 1,
                "description": f"Re-audit {', '.join(paths)} after {fix_key}: {problem}",
                "timeout_sec": pool_timeout(audit_pool, code.timeout_sec),
                "blocked_by": [fix_key],
                "soft_deps": [],
                "context": {"conflict": conflict.pk, "round": round_no, "focus": paths},
                "expected_sec": auditor.expected_sec if auditor else code.expected_sec,
            },
        ],
    )
    mark_resolving(conflict, round_no, [fix_key, audit_key])


def settle_reaudit(reaudit: Task) -> None:
    conflict = Conflict.objects.filter(
        pk=reaudit.context.get("conflict"), execution_id=reaudit.execution_id
    ).first()
    if conflict is None or conflict.status == ConflictStatus.RESOLVED:
        return
    fix = Task.objects.filter(
        execution_id=reaudit.execution_id, key__in=reaudit.blocked_by, kind=TaskKind.REMEDIATION
    ).first()
    fix_result = fix.result if fix else {}
    paths = set(conflict.details["paths"]) | {f["path"] for f in fix_result.get("files", [])}
    remaining = blocking(reaudit.result.get("findings", []), paths) + blocking(
        fix_result.get("findings", []), paths
    )
    if remaining:
        start_remediation(conflict, remaining)
        return
    summary = fix_result.get("summary", "fixed")
    resolve(
        conflict,
        f"Round {conflict.rounds}: {fix.key if fix else 'the fix'} — {summary} "
        f"Re-audit {reaudit.key} and bandit "
        f"found nothing critical or high in {', '.join(sorted(paths))}.",
        f"{summary} ({conflict.details['code']} via {fix.key if fix else '?'}, "
        f"re-audited clean by {reaudit.key})",
        mark_paths=paths,
    )


# ---------------------------------------------------------------- rejected schemas → revision


def schema_problems(task: Task) -> tuple[list[dict], list[str]]:
    findings = blocking([f for f in task.result.get("findings", []) if f.get("source") == "schema"])
    reports = task.result.get("verification", {}).get("schema", {})
    errors = [
        error
        for report in reports.values()
        if not report.get("applied")
        for error in report.get("errors", [])
    ]
    return findings, errors


def reject_schema(task: Task) -> None:
    findings, errors = schema_problems(task)
    consumers = sorted(
        Task.objects.filter(execution_id=task.execution_id)
        .exclude(pk=task.pk)
        .values_list("key", "blocked_by", "soft_deps"),
    )
    between = [task.key] + [key for key, hard, soft in consumers if task.key in hard or task.key in soft]
    reports = task.result.get("verification", {}).get("schema", {})
    paths = sorted(path for path, report in reports.items() if not report.get("accepted"))
    problem = headline(findings) if findings else (errors[0] if errors else "schema rejected")
    # A fix of a schema (a contract mismatch) that the checks reject is revised as its lineage.
    root = task.key
    if task.kind in SUPERSEDING_KINDS and task.parent_id:
        root = Task.objects.filter(pk=task.parent_id).values_list("key", flat=True).first() or task.key
    conflict = detect(
        task.execution_id,
        ConflictKind.SCHEMA_REJECTED,
        between,
        f"Schema check vs Database on {problem} in {task.key}",
        {"schema": root, "paths": paths, "findings": findings, "errors": errors, "tasks": [task.key]},
    )
    start_revision(conflict, task)


def start_revision(conflict: Conflict, rejected: Task) -> None:
    findings, errors = schema_problems(rejected)
    problem = headline(findings) if findings else (errors[0] if errors else "schema rejected")
    if conflict.rounds >= max_rounds():
        give_up(conflict, f"schema still rejected after {conflict.rounds} revision round(s): {problem}")
        return
    execution_id = conflict.execution_id
    root = Task.objects.get(execution_id=execution_id, key=conflict.details["schema"])
    round_no = conflict.rounds + 1
    key = follow_up_key(execution_id, root.key, "rev", round_no, conflict)
    files = lineage_files(root)
    add_follow_ups(
        execution_id,
        [
            {
                "id": key,
                "pool": root.pool,
                "kind": TaskKind.REVISION,
                "parent_id": root.pk,
                "priority": 1,
                "description": f"Revise the schema of {root.key}: {problem} (revision round {round_no})",
                "timeout_sec": pool_timeout(root.pool, root.timeout_sec),
                "blocked_by": [],
                "soft_deps": [],
                "context": {
                    "conflict": conflict.pk,
                    "round": round_no,
                    "findings": findings,
                    "errors": errors,
                    "target_files": [{"path": p, "content": c} for p, c in files.items()],
                },
                "expected_sec": root.expected_sec,
            }
        ],
    )
    # Dependents that have not started use the revised schema: they wait for it.
    for dependent in Task.objects.filter(execution_id=execution_id, status=TaskStatus.PENDING):
        if root.key in dependent.blocked_by and key not in dependent.blocked_by:
            Task.objects.filter(pk=dependent.pk, status=TaskStatus.PENDING).update(
                blocked_by=dependent.blocked_by + [key]
            )
    mark_resolving(conflict, round_no, [key])


def settle_revision(revision: Task) -> None:
    conflict = Conflict.objects.filter(
        pk=revision.context["conflict"], execution_id=revision.execution_id
    ).first()
    if conflict is None or conflict.status == ConflictStatus.RESOLVED:
        return
    if revision.result.get("verification", {}).get("schema_accepted") is not True:
        start_revision(conflict, revision)
        return
    summary = revision.result.get("summary", "revised schema")
    resolve(
        conflict,
        f"Round {conflict.rounds}: {revision.key} — {summary} The schema applies and every foreign key "
        f"has an index; dependents use the revised schema.",
        f"{summary} ({conflict.details['schema']} revised by {revision.key})",
        mark_paths=set(conflict.details.get("paths", [])),
    )


# ---------------------------------------------------------------- file collisions


_others_paths = sql.CompiledRead(
    lambda execution_id, task_id: (
        Task.objects.filter(execution_id=execution_id, status=TaskStatus.SUCCEEDED)
        .exclude(pk=task_id)
        .values_list("pk", "kind", "finished_at", "paths")
    ),
    Task._meta.get_field("execution"),
    Task._meta.pk,
)
_succeeded = sql.CompiledRead(
    lambda execution_id, ids: Task.objects.filter(
        execution_id=execution_id, status=TaskStatus.SUCCEEDED, pk__in=ids
    ),
    Task._meta.get_field("execution"),
    Task._meta.pk,
)


def record_collisions(task: Task) -> None:
    """A task writing a path another lineage wrote: decided by the merge rule, recorded as a resolved
    conflict, once per path, against the version that was current (earlier writers it also outdates
    were recorded when they were replaced)."""
    mine = set(Task.paths_of(task.result))
    if not mine:
        return
    # Only the current version of each of its paths is read (the writer last in the merge order:
    # earlier ones lost to it already), with the originals of those and its own (for lineages).
    # Every succeeded task of the execution is scanned, as plain rows (model instances cost more).
    current_of: dict[str, tuple] = {}  # path → merge order (kind, finished_at, pk) of its current version
    for pk, kind, finished_at, paths in _others_paths.all(task.execution_id, task.pk):
        order = (KIND_ORDER.get(kind, 0), finished_at, pk)  # merge_order() of a succeeded task
        for path in mine.intersection(paths):
            current_of[path] = max(current_of.get(path, order), order)
    if not current_of:
        return
    tasks = _succeeded.all(task.execution_id, {order[2] for order in current_of.values()})
    originals = {t.parent_id for t in tasks + [task] if t.parent_id} - {t.pk for t in tasks}
    tasks += _succeeded.all(task.execution_id, originals) if originals else []
    lineage = lineage_key(task, {t.pk: t for t in tasks})
    before, _ = merged_files(tasks)
    after, _ = merged_files(tasks + [task])
    own = {f["path"]: f["content"] for f in task.result.get("files", [])}
    for path in sorted(mine):
        wins = after[path]["task"] == task.key
        other = before.get(path) if wins else after[path]  # the version it replaces, or loses to
        if other is None or other["lineage"] == lineage or other["content"] == own[path]:
            continue
        replaced, kept = (other["task"], task.key) if wins else (task.key, other["task"])
        conflict = detect(
            task.execution_id,
            ConflictKind.FILE_COLLISION,
            [replaced, kept],
            f"{replaced} and {kept} both write {path}",
            {"path": path, "kept": kept, "replaced": replaced, "rule": COLLISION_RULE},
        )
        resolve(
            conflict,
            f"Kept {kept}'s version of {path} ({COLLISION_RULE}).",
            f"kept {kept}'s {path} over {replaced}'s",
        )


def close_open_conflicts(execution_id: str) -> None:
    """At aggregation nothing runs any more: a conflict still open lost its follow-up work."""
    for conflict in Conflict.objects.filter(execution_id=execution_id, status__in=CONFLICT_OPEN):
        stuck = list(
            Task.objects.filter(execution_id=execution_id, key__in=conflict.details.get("tasks", []))
            .exclude(status=TaskStatus.SUCCEEDED)
            .values_list("key", "status")
        )
        give_up(
            conflict,
            "follow-up work did not finish: " + ", ".join(f"{key} {status}" for key, status in stuck)
            if stuck
            else "stopped before a clean re-check",
        )


# ---------------------------------------------------------------- contract and integration fixes

# Kinds settled at aggregation, when the merged tree is checked as a whole (`interfaces`, `integration`).
TREE_KINDS = (ConflictKind.INTERFACE, ConflictKind.OWNERSHIP, ConflictKind.INTEGRATION)
# All the fix rounds those kinds may start in one execution, in max_rounds: a fix of one side
# that breaks another cannot go back and forth for ever.
TREE_ROUNDS_FACTOR = 3


def tree_rounds_left(execution_id: str) -> bool:
    spent = sum(
        Conflict.objects.filter(execution_id=execution_id, kind__in=TREE_KINDS).values_list(
            "rounds", flat=True
        )
    )
    return spent < TREE_ROUNDS_FACTOR * max_rounds()


def start_lineage_fix(
    conflict: Conflict, root: Task, *, label: str, description: str, context: dict
) -> str | None:
    """One fix round of a tree conflict: a remediation of `root`'s lineage given its current files and
    `context` (the evidence, or the gate's output); or the conflict unresolved once the rounds are
    spent. Returns the fix task's key, or None when it gave up."""
    if conflict.rounds >= max_rounds() or not tree_rounds_left(conflict.execution_id):
        give_up(conflict, f"still failing after {conflict.rounds} fix round(s): {conflict.description}")
        return None
    round_no = conflict.rounds + 1
    key = follow_up_key(conflict.execution_id, root.key, label, round_no, conflict)
    files = lineage_files(root)
    add_follow_ups(
        conflict.execution_id,
        [
            {
                "id": key,
                "pool": root.pool,
                "kind": TaskKind.REMEDIATION,
                "parent_id": root.pk,
                "priority": 1,
                "description": f"{description} (fix round {round_no} of {root.key})",
                "timeout_sec": pool_timeout(root.pool, root.timeout_sec),
                "blocked_by": [],
                "soft_deps": [],
                "context": {
                    "conflict": conflict.pk,
                    "round": round_no,
                    "conflict_kind": conflict.kind,
                    **context,
                    "target_files": [{"path": p, "content": c} for p, c in sorted(files.items())],
                },
                "expected_sec": root.expected_sec,
            }
        ],
    )
    details = {**conflict.details, "deviating": [root.key]}
    Conflict.objects.filter(pk=conflict.pk).update(details=details)
    conflict.details = details
    mark_resolving(conflict, round_no, [key])
    return key
