"""Merge conflicts between the tasks of one execution: found as results arrive, resolved by a task.

Runs inside the transaction that records a task's success (`attempts.attempt_succeed`), after
`conflicts.on_result`, like the other conflict kinds: the follow-up exists before anyone can decide
the execution is done.

- A succeeded task's commit is merged three-way (in memory) with the head of every other lineage
  that wrote one of its paths. Edits of different lines merge; edits of the same lines (or one
  file added twice with different content) are a conflict of kind `merge` between the two tasks,
  its evidence the paths and hunks.
- The resolution is a remediation of the later task's lineage, in its pool, that starts from both
  sides (its workspace holds the files with git's conflict markers; its context has the base and
  both versions) and commits the resolution on top of both. Dependents that have not started wait
  for it.
- When the resolution's commit contains both sides and none of the paths keeps a conflict marker,
  the conflict is resolved; else another round, up to `remediation.max_rounds`, then unresolved.
"""

import logging
from collections import Counter

from django.db.models import Q

from pools import git_store

from . import events, projects, sql
from .conflicts import add_follow_ups, detect, give_up, mark_resolving, max_rounds, pool_timeout, resolve
from .conflicts import follow_up_key as conflict_key
from .models import Conflict, Execution, Task
from .states import (
    CONFLICT_OPEN,
    SUPERSEDING_KINDS,
    ConflictKind,
    ConflictStatus,
    ExecutionStatus,
    TaskKind,
    TaskStatus,
)
from .transitions import move_execution

log = logging.getLogger("openclaw.aggregator")

MARKER_PREFIXES = ("<<<<<<< ", ">>>>>>> ")


def has_markers(content: str) -> bool:
    return any(line.startswith(MARKER_PREFIXES) for line in content.splitlines())


def root_of(task: Task) -> int:
    return task.parent_id if task.kind in SUPERSEDING_KINDS and task.parent_id else task.pk


_other_heads = sql.CompiledRead(
    lambda execution_id, task_id: (
        Task.objects.filter(execution_id=execution_id, status=TaskStatus.SUCCEEDED)
        .exclude(pk=task_id)
        .exclude(commit="")
        .only("pk", "execution", "key", "kind", "parent_id", "finished_at", "paths", "commit")
    ),
    Task._meta.get_field("execution"),
    Task._meta.pk,
)


def on_commit(task: Task) -> None:
    """A newly succeeded task with a commit: settle the conflict it resolves, then look for a
    conflict with the other lineages' heads."""
    if not task.commit:
        return
    if task.context.get("merge"):
        settle_resolution(task)
    mine = set(task.paths)
    if not mine:
        return
    others = _other_heads.all(task.execution_id, task.pk)
    heads: dict[int, Task] = {}
    touched: set[int] = set()
    own_root = root_of(task)
    for other in others:
        root = root_of(other)
        if root == own_root:
            continue
        if mine.intersection(other.paths):
            touched.add(root)
        current = heads.get(root)
        if current is None or (other.finished_at, other.pk) > (current.finished_at, current.pk):
            heads[root] = other
    if not touched:
        return
    repo = projects.repository_of(task.execution)
    for root in sorted(touched, key=lambda r: (heads[r].finished_at, heads[r].pk)):
        head = heads[root]
        if git_store.is_ancestor(repo, head.commit, task.commit) or git_store.is_ancestor(
            repo, task.commit, head.commit
        ):
            continue
        merged = git_store.merge(repo, head.commit, task.commit, labels=(head.key, task.key))
        if merged.conflicts and not already_open(task, head):
            raise_merge_conflict(head, task, merged.conflicts)
            return  # one at a time: the resolution's own success checks the rest


def already_open(task: Task, head: Task) -> bool:
    keys = {task.key, head.key}
    return any(
        set(c.between) == keys or c.details.get("sides_roots") == sorted([root_of(task), root_of(head)])
        for c in Conflict.objects.filter(
            execution_id=task.execution_id, kind=ConflictKind.MERGE, status__in=CONFLICT_OPEN
        )
    )


def raise_merge_conflict(ours: Task, theirs: Task, files: list[git_store.ConflictedFile]) -> None:
    paths = [f.path for f in files]
    conflict = detect(
        theirs.execution_id,
        ConflictKind.MERGE,
        [ours.key, theirs.key],
        f"{ours.key} and {theirs.key} edit the same lines of {', '.join(paths)}",
        {
            "paths": paths,
            "hunks": hunks_of(files),
            "ours": {"task": ours.key, "commit": ours.commit},
            "theirs": {"task": theirs.key, "commit": theirs.commit},
            "root": root_of(theirs),
            "sides_roots": sorted([root_of(ours), root_of(theirs)]),
            "tasks": [ours.key, theirs.key],
        },
    )
    start_resolution(conflict, files)


def hunks_of(files: list[git_store.ConflictedFile]) -> list[dict]:
    return [{"path": f.path, **hunk} for f in files for hunk in f.hunks][:50]


def start_resolution(conflict: Conflict, files: list[git_store.ConflictedFile]) -> None:
    """One round: a remediation of the later side's lineage (`details["root"]`) that starts from
    both sides (`details["ours"]`, `details["theirs"]`: a label and a commit each)."""
    if conflict.rounds >= max_rounds():
        give_up(
            conflict,
            f"still conflicting after {conflict.rounds} round(s): {', '.join(f.path for f in files)}",
        )
        return
    execution_id = conflict.execution_id
    ours, theirs = conflict.details["ours"], conflict.details["theirs"]
    root = Task.objects.get(pk=conflict.details["root"])
    round_no = conflict.rounds + 1
    key = conflict_key(execution_id, root.key, "merge", round_no, conflict)
    paths = [f.path for f in files]
    add_follow_ups(
        execution_id,
        [
            {
                "id": key,
                "pool": root.pool,
                "kind": TaskKind.REMEDIATION,
                "parent_id": root.pk,
                "priority": 1,
                "description": (
                    f"Resolve the merge conflict between {ours['task']} and {theirs['task']} in "
                    f"{', '.join(paths)}: keep what each side meant, remove the conflict markers"
                ),
                "timeout_sec": pool_timeout(root.pool, root.timeout_sec),
                "blocked_by": [],
                "soft_deps": [],
                "context": {
                    "conflict": conflict.pk,
                    "round": round_no,
                    "merge": {
                        "ours": ours["commit"],
                        "theirs": theirs["commit"],
                        "labels": [ours["task"], theirs["task"]],
                        "keep_ours": conflict.details.get("keep_ours", []),
                    },
                    "conflicts": [
                        {"path": f.path, "base": f.base, "ours": f.ours, "theirs": f.theirs} for f in files
                    ],
                    "target_files": [{"path": f.path, "content": f.marked} for f in files],
                },
                "expected_sec": root.expected_sec,
            }
        ],
    )
    # Dependents of either side that have not started build on the resolution.
    for dependent in Task.objects.filter(execution_id=execution_id, status=TaskStatus.PENDING):
        if {ours["task"], theirs["task"]} & set(dependent.blocked_by) and key not in dependent.blocked_by:
            Task.objects.filter(pk=dependent.pk, status=TaskStatus.PENDING).update(
                blocked_by=dependent.blocked_by + [key]
            )
    mark_resolving(conflict, round_no, [key])


def settle_resolution(task: Task) -> None:
    conflict = Conflict.objects.filter(
        pk=task.context.get("conflict"), execution_id=task.execution_id
    ).first()
    if conflict is None or conflict.kind != ConflictKind.MERGE or conflict.status == ConflictStatus.RESOLVED:
        return
    repo = projects.repository_of(task.execution)
    ours, theirs = conflict.details["ours"], conflict.details["theirs"]
    files = git_store.files_at(repo, task.commit)
    marked = [p for p in conflict.details["paths"] if has_markers(files.get(p, ""))]
    contains = all(git_store.is_ancestor(repo, side["commit"], task.commit) for side in (ours, theirs))
    if contains and not marked:
        summary = task.result.get("summary", "")
        resolve(
            conflict,
            f"Round {conflict.rounds}: {task.key} merged both sides. {summary}".strip(),
            f"{task.key} resolved {', '.join(conflict.details['paths'])}",
        )
        return
    merged = git_store.merge(repo, ours["commit"], theirs["commit"], labels=(ours["task"], theirs["task"]))
    carried = set(conflict.details.get("keep_ours", []))
    start_resolution(conflict, [f for f in merged.conflicts if f.path not in carried])


def resolve_with_main(execution: Execution, landing: "projects.Landing") -> bool:
    """Landing met another execution's edits of the same lines on `main`: a conflict of kind
    `merge` between `main` and the task, resolved by a remediation that starts from both, and the
    execution goes back to work (it lands once the resolution is done), its contract now the
    project's at that main amended by its plan. False when the rounds for
    conflicts with main are spent: the caller lands with the later version kept. The rounds are
    counted per lineage: each task whose work meets main's gets its own."""
    against_main = [(theirs, f) for ours, theirs, f in landing.conflicts if ours == projects.MAIN_LABEL]
    rounds = Counter(
        details.get("root")
        for details in Conflict.objects.filter(
            execution=execution, kind=ConflictKind.MERGE, details__landing=True
        ).values_list("details", flat=True)
    )
    heads = {t.key: t for t in Task.objects.filter(execution=execution, key__in={k for k, _ in against_main})}
    task_key = next((k for k, _ in against_main if rounds[root_of(heads[k])] < max_rounds()), None)
    if task_key is None:
        return False
    head = heads[task_key]
    # The resolution starts from main and the head merged, and every path that conflicts there is
    # settled in its commit (else one side would be kept silently): the lineage resolves the paths
    # it wrote itself; the others it carries from its dependencies take main's version, and their
    # own lineages bring their work to main.
    merged = git_store.merge(
        projects.repository_of(execution), landing.main, head.commit, labels=(projects.MAIN_LABEL, task_key)
    )
    written = lineage_paths(head)
    files = [f for f in merged.conflicts if f.path in written]
    carried = sorted(f.path for f in merged.conflicts if f.path not in written)
    if not files:
        files = [f for key, f in against_main if key == task_key]
        carried = [p for p in carried if p not in {f.path for f in files}]
    paths = [f.path for f in files]
    # From here on the execution builds on that main: its resolution, any later fix and the next
    # checks use the project's contract there, amended by its own plan. With only its own plan's
    # contract, the other execution's endpoints and tables on main would read as mismatches, and
    # a fix round would remove them.
    contract = projects.effective_contract(execution, landing.contract)
    if not move_execution(
        execution.pk, ExecutionStatus.AGGREGATING, ExecutionStatus.EXECUTING, contract=contract
    ):
        return False
    execution.contract = contract
    events.emit(execution.pk, "execution.resuming", payload={"reason": "merge conflict with main"})
    conflict = detect(
        execution.pk,
        ConflictKind.MERGE,
        [projects.MAIN_LABEL, task_key],
        f"main (another execution's work) and {task_key} edit the same lines of {', '.join(paths)}",
        {
            "paths": paths,
            "hunks": hunks_of(files),
            "ours": {"task": projects.MAIN_LABEL, "commit": landing.main},
            "theirs": {"task": task_key, "commit": head.commit},
            "root": root_of(head),
            "landing": True,
            "tasks": [task_key],
            "keep_ours": carried,
        },
    )
    start_resolution(conflict, files)
    return True


def lineage_paths(head: Task) -> set[str]:
    """The paths a lineage's own versions wrote (not those it carries from its dependencies)."""
    root = root_of(head)
    versions = Task.objects.filter(
        Q(pk=root) | Q(parent_id=root, kind__in=SUPERSEDING_KINDS), status=TaskStatus.SUCCEEDED
    )
    return {path for paths in versions.values_list("paths", flat=True) for path in paths}


def record_landing_conflicts(execution, landing: "projects.Landing") -> None:
    """Conflicts met when the execution landed on main (another execution's edits of the same
    lines, or a conflict whose rounds were spent): the later side's version is kept, and each is
    reported unresolved for review, once per pair and paths."""
    seen = {
        (tuple(c.between), tuple(c.details.get("paths", [])))
        for c in Conflict.objects.filter(execution=execution, kind=ConflictKind.MERGE).exclude(
            status=ConflictStatus.RESOLVED
        )
    }
    pairs: dict[tuple[str, str], list[git_store.ConflictedFile]] = {}
    for ours, theirs, file in landing.conflicts:
        pairs.setdefault((ours, theirs), []).append(file)
    for (ours, theirs), files in pairs.items():
        paths = [f.path for f in files]
        if ((ours, theirs), tuple(paths)) in seen or any(
            set(between) == {ours, theirs} for between, _ in seen
        ):
            continue
        conflict = detect(
            execution.pk,
            ConflictKind.MERGE,
            [ours, theirs],
            f"{ours} and {theirs} edit the same lines of {', '.join(paths)} (on landing)",
            {
                "paths": paths,
                "hunks": hunks_of(files),
                "landing": True,
                "kept": theirs,
            },
        )
        give_up(conflict, f"kept {theirs}'s version of {', '.join(paths)} on main; needs manual review")
