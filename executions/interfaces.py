"""The plan's contract checked against the merged tree, and its mismatches as conflicts.

At aggregation, once no task can make progress, the merged tree (every lineage's latest files, on
top of the project's files where the execution started) is checked against the execution's
contract by parsing (`pools.contracts.check`). Mismatches are grouped by kind and by the task that
deviates from the contract: each group is one conflict of kind `interface` or `ownership` between
that task and the tasks on the other side of the interface, with the evidence (file, line, what
was found, what the contract expects). A conflict is resolved by a remediation of the deviating
lineage, given the evidence (an ownership fix also drops the stray files), and re-checked at the
next aggregation: resolved when none of its mismatches remain, another round while rounds remain,
else unresolved. A mismatch in a file of the project that the execution left alone is noted, not
raised: no task of the plan wrote it; unless it misses an entry the plan adds to the project's
contract (an endpoint no route serves, a table the schema lacks), which the plan promised.

`review` reads and parses (no lock held); `settle` runs in the aggregation's transaction.
"""

import logging

from pools.contracts.check import Mismatch, Report, check_tree, declared_subjects

from .conflicts import detect, give_up, resolve, start_lineage_fix
from .merge import lineage_key, merge_order
from .models import Conflict, Execution, Project, Task
from .states import CONFLICT_OPEN, ConflictKind, ConflictStatus, TaskStatus

log = logging.getLogger("openclaw.aggregator")

MAX_EVIDENCE = 20


def lineage_trees(
    tasks: list[Task], base: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """The merged tree (path → content), each path's lineage, and each lineage's current paths.

    `base`: the project's files where the execution started (a follow-up's project so far), under
    the lineages' files: what no task wrote or removed stays as it was, with no owner.
    Each lineage's paths are its own, whether or not its version of a path is the one kept: the
    ownership check is about what a task wrote."""
    by_pk = {t.pk: t for t in tasks}
    lineages: dict[str, dict[str, tuple]] = {}  # lineage → path → (merge order, content)
    unchanged = dict(base or {})
    for task in sorted((t for t in tasks if t.status == TaskStatus.SUCCEEDED), key=merge_order):
        lineage = lineage_key(task, by_pk)
        files = lineages.setdefault(lineage, {})
        for path in task.result.get("removed", []):
            files.pop(path, None)
            unchanged.pop(path, None)
        for item in task.result.get("files", []):
            files[item["path"]] = (merge_order(task), item["content"])
    tree: dict[str, tuple] = {}
    owner_of: dict[str, str] = {}
    for lineage, files in lineages.items():
        for path, (order, content) in files.items():
            if path not in tree or order > tree[path][0]:
                tree[path] = (order, content)
                owner_of[path] = lineage
    writes = {lineage: sorted(files) for lineage, files in lineages.items()}
    merged = {path: content for path, content in unchanged.items() if path not in tree}
    merged.update((path, content) for path, (_, content) in tree.items())
    return merged, owner_of, writes


def review(
    execution: Execution,
    tree: tuple[dict[str, str], dict[str, str], dict[str, list[str]]],
    base: dict[str, str] | None = None,
) -> Report:
    """The merged tree (`lineage_trees` of the tasks on top of `base`, the project's files at the
    start) checked against the contract (an empty report without a contract).

    A mismatch in a file of the base that no task of the execution touched was there before it
    started: it counts against the checks and is noted, but raises no conflict (no task of this
    plan wrote it, and a follow-up is not held to what it did not change). A mismatch over an entry
    the plan adds to the project's contract (an endpoint it declares that no route serves) is the
    plan's."""
    if not execution.contract:
        return Report()
    files, owner_of, writes = tree
    report = check_tree(execution.contract, files, owner_of, writes)
    base = base or {}
    inherited = [
        m for m in report.mismatches if m.deviating is None and m.file in base and m.file not in owner_of
    ]
    if inherited:  # the project's contract is read only when some mismatch may be the project's
        promised = new_entries(execution)
        inherited = [m for m in inherited if m.subject not in promised]
    for mismatch in inherited:
        mismatch.inherited = True
    if inherited:
        report.notes.append(
            f"{len(inherited)} mismatch(es) in the project's files as they were before this execution, "
            f"which it did not change (first: {describe(inherited)}): not raised as its conflicts"
        )
    return report


def new_entries(execution: Execution) -> set[str]:
    """The endpoints, tables and columns the execution's plan adds to its project's contract (an
    entry it merely restates stays the project's; the project's contract moves only on landing)."""
    amended = declared_subjects(execution.contract_amendment or {})
    stored = (
        Project.objects.filter(client_id=execution.client_id, name=execution.project)
        .values_list("contract", flat=True)
        .first()
        if execution.project
        else None
    )
    return amended - declared_subjects(stored or {})


def group_mismatches(report: Report) -> dict[tuple[str, str | None], list[Mismatch]]:
    groups: dict[tuple[str, str | None], list[Mismatch]] = {}
    for mismatch in report.mismatches:
        if mismatch.inherited:
            continue
        groups.setdefault((mismatch.kind, mismatch.deviating), []).append(mismatch)
    return groups


def settle(execution_id: str, report: Report) -> list[str]:
    """Resolve the tree's interface and ownership conflicts the checks no longer find, start the next
    round of those they still find, and raise new ones; returns the fix tasks started."""
    groups = group_mismatches(report)
    started: list[str] = []
    summary = f"{report.passed} of {report.checks} contract checks pass"
    existing = Conflict.objects.filter(
        execution_id=execution_id, kind__in=[ConflictKind.INTERFACE, ConflictKind.OWNERSHIP]
    ).exclude(status=ConflictStatus.RESOLVED)
    for conflict in existing:
        key = (conflict.kind, (conflict.details.get("deviating") or [None])[0])
        mismatches = groups.pop(key, None)
        fixes = conflict.details.get("tasks", [])[len(conflict.between) :]
        if not mismatches:
            fix = fixes[-1] if fixes else "a retry"
            resolve(
                conflict,
                f"Round {conflict.rounds}: {fix} fixed it; the re-check finds none of its mismatches "
                f"({summary}).",
                f"{key[1]} now agrees with the contract (via {fix})",
            )
        elif conflict.status in CONFLICT_OPEN:
            record_evidence(conflict, mismatches)
            key_started = start_fix(conflict, mismatches)
            started += [key_started] if key_started else []
    for (kind, deviating), mismatches in sorted(groups.items(), key=lambda item: str(item[0])):
        conflict = raise_conflict(execution_id, kind, deviating, mismatches)
        if deviating is None:
            give_up(conflict, unbuilt(mismatches))
            continue
        key_started = start_fix(conflict, mismatches)
        started += [key_started] if key_started else []
    return started


def unbuilt(mismatches: list[Mismatch]) -> str:
    """Why a conflict no task of the plan can fix is given up."""
    subjects = sorted({m.subject for m in mismatches if m.subject})
    if subjects:
        return f"the plan declares {', '.join(subjects[:3])} but none of its tasks builds it"
    return "no task of the plan wrote the deviating file"


def describe(mismatches: list[Mismatch]) -> str:
    first = mismatches[0]
    more = f" (+{len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
    return f"{first.where()}: {first.found}{more}"


def raise_conflict(
    execution_id: str, kind: str, deviating: str | None, mismatches: list[Mismatch]
) -> Conflict:
    concerned = sorted({t for m in mismatches for t in m.concerned if t and t != deviating})
    between = ([deviating] if deviating else []) + concerned
    label = "Ownership" if kind == ConflictKind.OWNERSHIP else "Interface"
    return detect(
        execution_id,
        kind,
        between or ["contract"],
        f"{label}: {' vs '.join(between) or 'the project'} vs the contract on {describe(mismatches)}",
        {
            "deviating": [deviating] if deviating else [],
            "evidence": [m.as_dict() for m in mismatches[:MAX_EVIDENCE]],
            "checks": sorted({m.check for m in mismatches}),
            "tasks": list(between),
        },
    )


def record_evidence(conflict: Conflict, mismatches: list[Mismatch]) -> None:
    """A round's re-check: the evidence still found replaces the conflict's."""
    details = {**conflict.details, "evidence": [m.as_dict() for m in mismatches[:MAX_EVIDENCE]]}
    Conflict.objects.filter(pk=conflict.pk).update(details=details)
    conflict.details = details


def start_fix(conflict: Conflict, mismatches: list[Mismatch]) -> str | None:
    deviating = (conflict.details.get("deviating") or [None])[0]
    root = Task.objects.filter(execution_id=conflict.execution_id, key=deviating).first()
    if root is None:
        give_up(conflict, f"{deviating} is not a task of this execution")
        return None
    evidence = [m.as_dict() for m in mismatches[:MAX_EVIDENCE]]
    context: dict = {"evidence": evidence}
    if conflict.kind == ConflictKind.OWNERSHIP:
        context["drop_paths"] = sorted({m.file for m in mismatches if m.file})
        description = f"Move {root.key}'s files under the paths it owns: {describe(mismatches)}"
        label = "own"
    else:
        description = f"Make {root.key} agree with the contract: {describe(mismatches)}"
        label = "iface"
    return start_lineage_fix(conflict, root, label=label, description=description, context=context)
