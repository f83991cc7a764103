"""Dispatch: queue a pool's ready tasks into its free slots, in rank order, within budgets.

Admission control counts a pool's queued and running tasks while holding the pool's row
(`select_for_update`; SQLite serializes writers anyway), so `max_concurrent` holds across every
worker host, and admin edits take effect at the next dispatch. Among ready tasks, dispatch prefers
the lower priority number, then the longer remaining critical path (upward rank), then the task
planned first (`sql.DISPATCH_ORDER`). Messages go out on commit, by name (`messages`).
"""

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from pools.models import WorkerPool

from . import billing, events, messages, sql
from .models import Task
from .states import StopReason, TaskStatus
from .task_graph import block_dependents, maybe_finish_work
from .transitions import lock_execution, lock_executions, move_task, move_tasks

# The pool's row locked (with `skip_locked` inside an execution's transition) and its limit read.
_pool_limit = {
    skip_locked: sql.CompiledRead(
        lambda name, skip_locked=skip_locked: (
            WorkerPool.objects.select_for_update(skip_locked=skip_locked)
            .filter(name=name, enabled=True)
            .values_list("max_concurrent", flat=True)
        ),
        WorkerPool._meta.get_field("name"),
    )
    for skip_locked in (False, True)
}


def dispatch_ready_tasks(pool_name: str) -> int:
    """Queue as many ready tasks of a pool as it has free slots; returns how many were queued."""
    return dispatch_ready_pools([pool_name])


def dispatch_ready_pools(pool_names: Iterable[str]) -> int:
    """`dispatch_ready_tasks` for several pools (one transaction each); returns how many were queued.

    Most calls find nothing to do (a slot freed in a pool without ready work, the reaper's pass):
    one plain read then, no pool lock and, on SQLite, no write lock. A task that becomes ready
    meanwhile is dispatched by its own commit or the reaper's next pass.
    """
    pool_names = set(pool_names)
    if not pool_names:  # a success that queued its dependents itself: nothing left, not even a query to build
        return 0
    ready = set(
        Task.objects.filter(pool__in=pool_names, status=TaskStatus.READY)
        .order_by()
        .values_list("pool", flat=True)
        .distinct()
    )
    return sum(dispatch_pool(pool_name) for pool_name in sorted(ready))


def dispatch_pool(
    pool_name: str,
    *,
    within_execution: str | None = None,
    held_limits: dict[str, int | None] | None = None,
    keep: list[int] | None = None,
) -> int | None:
    """Queue a pool's ready tasks into its free slots, in dispatch order; returns how many.

    `within_execution`: called inside that execution's transition, its lock held, to queue the tasks
    the transition just made ready without a transaction of their own (which would wait for its
    turn at the write lock again, on the critical path). It never waits for a lock there, so the
    lock order holds: when another transaction holds the pool's row (PostgreSQL), when the first
    ready tasks include another execution's, or when the budget refuses a task, it returns None
    and the caller dispatches the pool after commit. `held_limits`: the limits of the pools whose
    rows the transaction locked already (None for a disabled pool), read with their locks. `keep`:
    the first task queued is appended to it and sent no message: the caller starts it itself.
    """
    within = within_execution is not None
    now = timezone.now()
    sent: list[tuple[int, int, str, str]] = []  # (task id, dispatch number, execution id, key)
    over_budget: set[str] = set()
    with transaction.atomic(savepoint=not within):
        if held_limits is not None and pool_name in held_limits:
            max_concurrent = held_limits[pool_name]
        else:
            max_concurrent = _pool_limit[within].first(pool_name)
        if max_concurrent is None:
            return None if within else 0
        active, candidates = sql.admission(pool_name, now, limit=max_concurrent * 2)
        free = max_concurrent - active
        if free <= 0 or not candidates:
            return 0
        candidates = candidates[: free * 2]
        if within and any(c[1] != within_execution for c in candidates[:free]):
            return None
        # Execution rows in one global order, so two pools dispatching at once cannot deadlock.
        # Within an execution's transition, its row (the only one queued here) is held already.
        if not within:
            lock_executions({c[1] for c in candidates})
        chosen: list[tuple] = []
        for candidate in candidates:
            _, execution_id, _, has_budget = candidate
            if len(sent) + len(chosen) >= free or (within and execution_id != within_execution):
                break
            if execution_id in over_budget:
                continue
            # Most executions have no budget: the candidate's row says so, no query. The budget
            # counts the execution's queued tasks, so those chosen so far are queued first.
            if has_budget:
                sent += _queue(chosen, now)
                chosen = []
                if not billing.budget_allows_dispatch(execution_id, pool_name):
                    over_budget.add(execution_id)
                    continue
            chosen.append(candidate)
        sent += _queue(chosen, now)
        # Registered before the events: once committed, the messages go out first.
        if keep is not None and sent:
            keep.append(sent[0][0])
        dispatches = [(task_id, dispatch_no) for task_id, dispatch_no, _, _ in (sent[1:] if keep else sent)]
        if dispatches:
            transaction.on_commit(lambda: messages.send_run_tasks(pool_name, dispatches))
        queued: dict[str, list] = {}
        for _, _, execution_id, key in sent:
            queued.setdefault(execution_id, []).append(("task.queued", key, {"pool": pool_name}))
        for execution_id, items in queued.items():
            events.emit_many(execution_id, items)
    if within:
        return None if over_budget else len(sent)
    # Outside the pool's lock: the stop touches tasks of every pool of the execution.
    for execution_id in sorted(over_budget):
        stop_for_budget(execution_id)
    return len(sent)


def _queue(chosen: list[tuple], now: datetime) -> list[tuple[int, int, str, str]]:
    """ready → queued for the chosen candidates, in one statement; returns (task id, dispatch
    number, execution id, key) of those it queued, in the candidates' order. A candidate that is no
    longer ready (cancelled since it was read) is skipped: its slot waits for the next dispatch."""
    if not chosen:
        return []
    won = dict(
        move_tasks(
            [c[0] for c in chosen],
            TaskStatus.READY,
            TaskStatus.QUEUED,
            returning=("pk", "dispatch_count"),
            queued_at=now,
            add={"dispatch_count": 1},
        )
    )
    return [
        (task_id, won[task_id], execution_id, key)
        for task_id, execution_id, key, _ in chosen
        if task_id in won
    ]


def stop_for_budget(execution_id: str) -> list[str]:
    """The budget blocked a dispatch: no new task of the execution starts. Ready tasks are cancelled,
    their dependents blocked, the other waiting tasks cancelled; running ones finish, then the
    execution aggregates (and ends `budget_exceeded`). Returns the cancelled task keys."""
    with transaction.atomic():
        lock_execution(execution_id)
        cancelled = _cancel_for_budget(execution_id, TaskStatus.READY)
        block_dependents(execution_id)
        cancelled += _cancel_for_budget(execution_id, TaskStatus.PENDING)
        if cancelled:
            events.emit(execution_id, "execution.budget_exceeded", payload={"cancelled": cancelled})
        maybe_finish_work(execution_id)
    return cancelled


def _cancel_for_budget(execution_id: str, status: str) -> list[str]:
    now = timezone.now()
    cancelled = []
    for task_id, key in Task.objects.filter(execution_id=execution_id, status=status).values_list(
        "id", "key"
    ):
        if move_task(
            task_id,
            status,
            TaskStatus.CANCELLED,
            finished_at=now,
            stop_reason=StopReason.BUDGET,
            error=StopReason.BUDGET.label,
        ):
            events.emit(
                execution_id, "task.cancelled", task_key=key, payload={"reason": StopReason.BUDGET.label}
            )
            cancelled.append(key)
    return cancelled


def dispatch_after_commit(pools: Iterable[str]) -> None:
    """Dispatch these pools once the current transaction commits."""
    pools = set(pools)
    transaction.on_commit(lambda: dispatch_ready_pools(pools))
