"""The merged project tree: every succeeded task's files, one version per path.

A lineage is an original task and the remediations and revisions that replace its output. Each
lineage counts with its latest version of a path (a remediation may also drop paths of its
lineage: `result["removed"]`, the files an ownership fix moves out); when several lineages write one path with
different content, COLLISION_RULE picks the version kept and each other one is a collision.
"""

from django.utils import timezone

from .models import Task
from .states import SUPERSEDING_KINDS, TaskKind, TaskStatus

# Which version of a path the merged tree keeps: remediation beats original, later revision beats
# earlier; otherwise the later result wins.
KIND_ORDER = {TaskKind.PLAN: 0, TaskKind.REVISION: 1, TaskKind.REMEDIATION: 2, TaskKind.REAUDIT: 3}
COLLISION_RULE = "remediation beats original, later revision beats earlier, otherwise the later result wins"


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
        for path in task.result.get("removed", []):  # an ownership fix drops its lineage's stray files
            versions.get(path, {}).pop(lineage, None)
        for item in task.result.get("files", []):
            entry = {"content": item["content"], "task": task.key, "lineage": lineage}
            versions.setdefault(item["path"], {})[lineage] = (merge_order(task), entry)
    tree: dict[str, dict] = {}
    collisions = []
    for path, by_lineage in versions.items():
        if not by_lineage:
            continue
        ranked = [entry for _, entry in sorted(by_lineage.values(), key=lambda pair: pair[0])]
        tree[path] = kept = ranked[-1]
        collisions += [
            {"path": path, "kept": kept["task"], "replaced": other["task"], "rule": COLLISION_RULE}
            for other in ranked[:-1]
            if other["content"] != kept["content"]
        ]
    return tree, collisions
