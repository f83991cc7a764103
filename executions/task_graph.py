"""An execution's task graph as the work moves through it: tasks created from a plan (or added
for a conflict), dependents promoted when their hard dependencies succeed, blocked when one is
lost, and the end of the work phase once no task can make progress."""

from django.db import transaction
from django.utils import timezone

from pools.models import WorkerPool

from . import events, messages, sql
from .dag import PlanNode, dispatch_ranks
from .models import Execution, Task
from .states import TASK_LOST, TASK_OPEN, ExecutionStatus, StopReason, TaskKind, TaskStatus
from .transitions import lock_execution, move_execution, move_task, move_tasks


def create_tasks(
    execution: Execution,
    plan_tasks: list[dict],
    *,
    expected: dict[str, float],
    weights: dict[str, float],
    ranks: dict[str, float] | None = None,
    pools: dict[str, WorkerPool] | None = None,
) -> list[Task]:
    """Insert a plan's tasks: those with no hard dependency start `ready`, the others `pending`.
    `ranks`: their dispatch ranks, when the caller has them (`dag.dispatch_ranks` otherwise).
    `pools`: by name, when the caller read them before its transaction."""
    if pools is None:
        pools = {p.name: p for p in WorkerPool.objects.all()}
    if ranks is None or any(t["id"] not in ranks for t in plan_tasks):
        ranks = dispatch_ranks(
            [
                PlanNode(t["id"], t["pool"], expected[t["id"]], t["priority"], tuple(t["blocked_by"]))
                for t in plan_tasks
            ],
            {name: pool.max_concurrent for name, pool in pools.items()},
        )
    now = timezone.now()
    tasks = [
        Task(
            execution=execution,
            key=t["id"],
            pool=t["pool"],
            description=t["description"],
            kind=t.get("kind", TaskKind.PLAN),
            role=pools[t["pool"]].role if t["pool"] in pools else "",
            priority=t["priority"],
            timeout_sec=t["timeout_sec"],
            blocked_by=t["blocked_by"],
            soft_deps=t["soft_deps"],
            context=t["context"],
            expected_sec=expected[t["id"]],
            weight=weights[t["id"]],
            rank=ranks[t["id"]],
            max_retries=pools[t["pool"]].max_retries if t["pool"] in pools else 2,
            parent_id=t.get("parent_id"),
            status=TaskStatus.PENDING if t["blocked_by"] else TaskStatus.READY,
            ready_at=None if t["blocked_by"] else now,
        )
        for t in plan_tasks
    ]
    return Task.objects.bulk_create(tasks)


def add_tasks(execution_id: str, new_tasks: list[dict]) -> list[Task]:
    """Add tasks to a running execution (remediation, re-audit, revision); ranks of the new part
    only. The caller dispatches their pools after commit."""
    lock_execution(execution_id)
    execution = Execution.objects.get(pk=execution_id)
    expected = {t["id"]: t.pop("expected_sec", 1.0) for t in new_tasks}
    created = create_tasks(execution, new_tasks, expected=expected, weights=dict.fromkeys(expected, 0.0))
    for task in created:
        events.emit(
            execution_id,
            "task.created",
            task_key=task.key,
            payload={
                "pool": task.pool,
                "kind": task.kind,
                "description": task.description[:200],
                "blocked_by": task.blocked_by,
            },
        )
    return created


# Read on every success, inside the write lock.
_graph = sql.CompiledRead(
    lambda execution_id: Task.objects.filter(execution_id=execution_id).values(
        "id", "key", "status", "blocked_by", "pool"
    ),
    Task._meta.get_field("execution"),
)
_an_open_task = sql.CompiledRead(
    lambda execution_id: Task.objects.filter(execution_id=execution_id, status__in=TASK_OPEN).values_list(
        "pk", flat=True
    )[:1],
    Task._meta.get_field("execution"),
)


def promote_dependents(execution_id: str) -> set[str]:
    """pending → ready for every task whose hard dependencies all succeeded; returns their pools."""
    rows = _graph.all(execution_id)
    done = {r["key"] for r in rows if r["status"] == TaskStatus.SUCCEEDED}
    ready = {
        r["id"]: r
        for r in rows
        if r["status"] == TaskStatus.PENDING and all(dep in done for dep in r["blocked_by"])
    }
    if not ready:
        return set()
    promoted = sorted(
        task_id
        for (task_id,) in move_tasks(
            sorted(ready), TaskStatus.PENDING, TaskStatus.READY, ready_at=timezone.now()
        )
    )
    events.emit_many(execution_id, [("task.ready", ready[task_id]["key"], None) for task_id in promoted])
    return {ready[task_id]["pool"] for task_id in promoted}


def block_dependents(execution_id: str) -> list[str]:
    """Every pending task that (transitively) waits on a dead, blocked or cancelled task → blocked."""
    rows = list(Task.objects.filter(execution_id=execution_id).values("id", "key", "status", "blocked_by"))
    lost = {r["key"] for r in rows if r["status"] in TASK_LOST}
    blocked = []
    changed = True
    while changed:
        changed = False
        for row in rows:
            if row["status"] == TaskStatus.PENDING and any(dep in lost for dep in row["blocked_by"]):
                causes = [dep for dep in row["blocked_by"] if dep in lost]
                if move_task(
                    row["id"],
                    TaskStatus.PENDING,
                    TaskStatus.BLOCKED,
                    finished_at=timezone.now(),
                    stop_reason=StopReason.DEPENDENCY,
                    error=f"blocked: needs {', '.join(causes)}",
                ):
                    events.emit(execution_id, "task.blocked", task_key=row["key"], payload={"needs": causes})
                    blocked.append(row["key"])
                row["status"] = TaskStatus.BLOCKED
                lost.add(row["key"])
                changed = True
    return blocked


def maybe_finish_work(execution_id: str) -> bool:
    """executing → aggregating once no task can still make progress; sends the aggregation message."""
    if _an_open_task.all(execution_id):
        return False
    now = timezone.now()
    if not move_execution(
        execution_id,
        ExecutionStatus.EXECUTING,
        ExecutionStatus.AGGREGATING,
        phase_sent_at=now,
        phase_lease_until=None,
        phase_claims=0,
    ):
        return False
    events.emit(execution_id, "execution.aggregating")
    transaction.on_commit(lambda: messages.send_aggregate(execution_id))
    return True
