"""An attempt's life: started by its dispatch's message, kept alive by its lease, closed by a
success or a failure, which decides the task's next status.

A task runs as attempts. The message of the task's current dispatch starts one (queued → running);
the worker renews its lease while the model works; the attempt ends succeeded (the task succeeds,
conflicts are checked, dependents may become ready and are queued in the same transaction where
they can be) or failed, expired or lost. A failed or expired attempt counts against the pool's
`max_retries`: the task goes back to `ready` after a backoff, or is dead (dependents blocked). A
lost attempt (its worker died) is retried at once without counting, up to MAX_LOST_ATTEMPTS losses.
Every usage is charged once whoever closes the attempt (`billing`).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from pools.models import WorkerPool
from pools.storable import storable

from . import billing, conflicts, events, merge_conflicts, messages, projects, sql
from .dispatch import (
    dispatch_after_commit,
    dispatch_pool,
    dispatch_ready_pools,
    dispatch_ready_tasks,
    stop_for_budget,
)
from .models import Attempt, Task
from .states import MAX_LOST_ATTEMPTS, AttemptStatus, StopReason, TaskStatus
from .task_graph import block_dependents, maybe_finish_work, promote_dependents
from .transitions import close_attempt_row, lock_execution, move_task

log = logging.getLogger("openclaw.failures")


_attempt_to_close = sql.CompiledRead(
    lambda attempt_id: (
        Attempt.objects.select_related("task")
        .annotate(client_id=F("task__execution__client_id"))
        .filter(pk=attempt_id)
    ),
    Attempt._meta.pk,
)


def attempt_to_close(attempt_id) -> Attempt:
    """An attempt with its task and what billing its usage needs (`client_id`)."""
    attempt = _attempt_to_close.first(attempt_id)
    if attempt is None:
        raise Attempt.DoesNotExist(f"attempt {attempt_id}")
    return attempt


def close_attempt(attempt: Attempt, usage, to: str, **changes) -> bool:
    """running → `to` (with `changes`), with its last call's usage (a `billing.AttemptUsage`, or None) stored
    and charged; True when this caller closed it. An attempt closed first by someone else (the
    reaper, an earlier report) stays as it is, but its tokens were spent: they are charged as a
    late report, once. The caller holds the execution's lock and adds `usage.task_increments()`
    (amounts to add) to its task's update."""
    assign = {**changes, **(usage.attempt_assign() if usage else {})}
    if not close_attempt_row(
        attempt.pk, to, assign=assign, add=usage.attempt_increments() if usage else None
    ):
        if usage is not None:
            billing.record_usage(attempt, usage, attempt.client_id)
        return False
    if usage is not None:
        billing.charge_closed_attempt(attempt, usage, attempt.client_id)
    return True


# A task's attempts so far, as a subquery of the task row (a GROUP BY over the task and its
# execution's columns would cost more).
attempt_count = (
    Attempt.objects.filter(task=OuterRef("pk")).order_by().values("task").annotate(n=Count("pk")).values("n")
)


def task_start(task_id: int, dispatch_no: int, worker: str, *, lease_sec: float) -> Attempt | None:
    """queued → running for the message of this dispatch only; None for a stale or duplicate message."""
    now = timezone.now()
    # The task as the agent needs it, read before the transition: the transaction, which waits its
    # turn at the write lock on the critical path, stays short. What the transition changes is set
    # on it by `begin_attempt`; the attempts cannot change if the CAS wins (attempts are created by the CAS's
    # winner only, and this dispatch's message is the only one that can win until the task is
    # queued again).
    task = running_task(task_id, with_attempt_count=True)
    if task is None:
        return None
    with transaction.atomic():
        lock_execution(task.execution_id)
        return begin_attempt(task, dispatch_no, worker, now, lease_sec=lease_sec)


def _running_task(task_id: int):
    # The execution's plan is not the agent's business (and is the largest column).
    return (
        Task.objects.filter(pk=task_id)
        .select_related("execution")
        .defer("execution__plan", "execution__contract_report", "execution__integration")
    )


_running_tasks = {
    False: sql.CompiledRead(_running_task, Task._meta.pk),
    True: sql.CompiledRead(
        lambda task_id: _running_task(task_id).annotate(attempts_so_far=Subquery(attempt_count)),
        Task._meta.pk,
    ),
}


def running_task(task_id: int, *, with_attempt_count: bool = False) -> Task | None:
    """The task with its execution, as its agent needs them (`attempts_so_far`: its attempts)."""
    return _running_tasks[with_attempt_count].first(task_id)


def begin_attempt(
    task: Task, dispatch_no: int, worker: str, now, *, lease_sec: float, run_after: str = ""
) -> Attempt | None:
    """queued → running for this dispatch, and its attempt, by `worker`; None when the CAS loses.
    The caller holds the execution's lock; `task` carries `attempts_so_far` and is updated as the
    transition changed it (the attempt's `task`, as its agent needs it). `run_after`: the task whose
    worker runs it in place of its message (the `task.started` event says so)."""
    if not move_task(
        task.pk,
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        where={"dispatch_count": dispatch_no},
        started_at=now,
        progress=0,
        error="",
    ):
        return None
    number = (task.attempts_so_far or 0) + 1
    attempt = Attempt.objects.create(
        task=task,
        number=number,
        worker=worker,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=lease_sec),
        deadline_at=now + timedelta(seconds=task.timeout_sec),
    )
    task.status, task.started_at, task.progress, task.error = TaskStatus.RUNNING, now, 0, ""
    payload = {"attempt": number, "attempt_id": str(attempt.id), "worker": worker, "pool": task.pool}
    if run_after:
        payload["run_after"] = run_after
    events.emit(task.execution_id, "task.started", task_key=task.key, payload=payload)
    return attempt


@dataclass(frozen=True)
class Continuation:
    """The worker thread that records a success may start one of the tasks the success made ready,
    in the same transaction, and run it next: no message, no second transaction, no wait for a
    consumer on the critical path. The attempt it starts holds a lease like any other (the reaper
    retries it if the worker dies); the task is queued with a message as usual when none fits."""

    worker: str
    lease_sec: float
    pools: frozenset[str] | None  # the pools whose queues the worker consumes (None: every pool)
    within_sec: float  # the task's timeout must fit in this (what is left of the message's time limit)

    def fits(self, pool: str) -> bool:
        return self.pools is None or pool in self.pools


class Success:
    """attempt_succeed's answer: true when it recorded the success; `next_attempt` is the attempt it
    started for the continuation (its task loaded), if any."""

    def __init__(self, recorded: bool, next_attempt: Attempt | None = None):
        self.recorded, self.next_attempt = recorded, next_attempt

    def __bool__(self) -> bool:
        return self.recorded


def attempt_renew(attempt_id, *, lease_sec: float, progress: int | None = None) -> bool:
    """Extend a running attempt's lease (and record progress); False once it is no longer running."""
    now = timezone.now()
    if not Attempt.objects.filter(pk=attempt_id, status=AttemptStatus.RUNNING).update(
        lease_expires_at=now + timedelta(seconds=lease_sec)
    ):
        return False
    if progress is not None:
        Task.objects.filter(attempts__id=attempt_id, status=TaskStatus.RUNNING).update(progress=progress)
    return True


def attempt_succeed(
    attempt_id,
    *,
    result: dict,
    usage=None,
    commit: str = "",
    objects=None,
    continuation: Continuation | None = None,
) -> Success:
    """Record a successful attempt: the task succeeds, its dependents may become ready (and, with a
    `continuation`, one of them starts in the same transaction).

    `commit` is the output's commit in the project's repository, and `objects` its objects the
    database lacks (`projects.NewObjects`), stored with the success: a dependent, on any host,
    finds them.

    `usage` is the attempt's last call (a `billing.AttemptUsage`): stored by the updates that close
    the attempt and its task, or, when someone else closed the attempt first, charged as a late
    report."""
    now = timezone.now()
    attempt = attempt_to_close(attempt_id)  # read, and the usage priced, before the write lock
    task = attempt.task
    with transaction.atomic():
        held_limits = lock_dependents_pools(task)
        lock_execution(task.execution_id)
        pools: set[str] = set()  # the pools left to dispatch after commit
        if not close_attempt(attempt, usage, AttemptStatus.SUCCEEDED, finished_at=now):
            return Success(False)
        paths = Task.paths_of(result)
        if not move_task(
            task.pk,
            TaskStatus.RUNNING,
            TaskStatus.SUCCEEDED,
            finished_at=now,
            progress=100,
            result=result,
            error="",
            paths=paths,
            commit=commit,
            add=usage.task_increments() if usage else None,
        ):
            return Success(False)
        task.status, task.finished_at, task.progress, task.result, task.error, task.paths, task.commit = (
            TaskStatus.SUCCEEDED,
            now,
            100,
            result,
            "",
            paths,
            commit,
        )
        with events.batched(task.execution_id):
            events.emit(
                task.execution_id,
                "task.succeeded",
                task_key=task.key,
                payload={
                    "pool": task.pool,
                    "attempt": attempt.number,
                    "duration_sec": attempt_duration(attempt.started_at, now),
                    "tokens": task.tokens_in + task.tokens_out,
                    "summary": result.get("summary", "")[:300],
                    "files": len(result.get("files", [])),
                    "findings": len(result.get("findings", [])),
                },
            )
            conflicts.on_result(task)  # follow-up tasks exist before anyone can finish the work
            merge_conflicts.on_commit(task)
            promoted = promote_dependents(task.execution_id)
            if not promoted:  # with a task just made ready, the work is not over
                maybe_finish_work(task.execution_id)
            # The new ready tasks and the freed slot, queued in this transaction where possible.
            ready_pools = set(promoted)
            if task.pool not in ready_pools and _a_ready_task.all(task.pool):
                ready_pools.add(task.pool)
            kept: list[int] = []  # the queued task the continuation starts, sent no message
            for pool in sorted(ready_pools):
                keep = kept if continuation and not kept and continuation.fits(pool) else None
                if (
                    dispatch_pool(
                        pool, within_execution=task.execution_id, held_limits=held_limits, keep=keep
                    )
                    is None
                ):
                    pools.add(pool)
            next_attempt = _continue(kept[0], continuation, after=task.key) if kept else None
        # After commit, the messages of the tasks queued here go first, then the events (handed to the
        # publisher thread), then the dispatches left over, which take a transaction each: events
        # behind them would wait for the write lock as well.
        if pools:
            transaction.on_commit(lambda: dispatch_ready_pools(pools))
        if objects is not None:
            projects.store_objects(objects)  # last: the project's row is the last lock it takes
    return Success(True, next_attempt)


def _continue(task_id: int, continuation: Continuation, *, after: str) -> Attempt | None:
    """Start the queued task `task_id` for the continuation, within the success's transaction (of
    the task `after`); if it cannot (its timeout would outlast the message's time limit), send its
    message after all."""
    task = running_task(task_id, with_attempt_count=True)
    attempt = None
    if task.timeout_sec <= continuation.within_sec:
        attempt = begin_attempt(
            task,
            task.dispatch_count,
            continuation.worker,
            timezone.now(),  # not the success's: its transaction's work so far is on the way
            lease_sec=continuation.lease_sec,
            run_after=after,
        )
    if attempt is None:
        transaction.on_commit(lambda: messages.send_run_task(task.pk, task.dispatch_count, task.pool))
    return attempt


_a_ready_task = sql.CompiledRead(
    lambda pool: Task.objects.filter(pool=pool, status=TaskStatus.READY).values_list("pk", flat=True)[:1],
    Task._meta.get_field("pool"),
)


def lock_dependents_pools(task: Task) -> dict[str, int | None]:
    """Lock the pools of the tasks waiting on `task` before its execution (the lock order), so that
    its success can queue them there rather than find a pool row locked and leave it to a
    transaction of its own after commit. The dependents are found by a subquery of the locking
    statement, whose rows it does not lock: a dependent added meanwhile is dispatched after commit.
    Returns the locked pools' limits (None for a disabled pool), which the dispatch then need not
    read again. SQLite has no row locks (nor JSON containment in Django)."""
    if not connection.features.has_select_for_update:
        return {}
    dependents = Task.objects.filter(
        execution_id=task.execution_id, status=TaskStatus.PENDING, blocked_by__contains=[task.key]
    )
    return {
        name: limit if enabled else None
        for name, limit, enabled in WorkerPool.objects.select_for_update()
        .filter(name__in=dependents.values("pool"))
        .order_by("name")
        .values_list("name", "max_concurrent", "enabled")
    }


def attempt_fail(attempt_id, error: str, *, usage=None, outcome: str = AttemptStatus.FAILED) -> bool:
    """Close a running attempt as failed/expired/lost and decide: retry after backoff, or dead."""
    now = timezone.now()
    with transaction.atomic():
        attempt = attempt_to_close(attempt_id)
        task = attempt.task
        lock_execution(task.execution_id)
        error = storable(error)[:4000]  # it may quote a model or its server
        if not close_attempt(attempt, usage, outcome, finished_at=now, error=error):
            return False
        if not move_task(
            task.pk,
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            error=error,
            add=usage.task_increments() if usage else None,
        ):
            return False
        pool = WorkerPool.objects.filter(name=task.pool).first()
        lost = task.attempts.filter(status=AttemptStatus.LOST).count()
        counts = outcome != AttemptStatus.LOST or lost > MAX_LOST_ATTEMPTS
        failed = task.failed_attempts + (1 if counts else 0)
        max_retries = pool.max_retries if pool else task.max_retries
        log_task_failure(task, attempt, error, failed, max_retries, now)
        events.emit(
            task.execution_id,
            "task.failed",
            task_key=task.key,
            payload={
                "attempt": attempt.number,
                "error": error[:500],
                "outcome": outcome,
                "duration_sec": attempt_duration(attempt.started_at, now),
            },
        )
        if failed <= max_retries:
            backoff = pool.backoff_for(failed) if (pool and counts) else 0.0
            move_task(
                task.pk,
                TaskStatus.FAILED,
                TaskStatus.READY,
                failed_attempts=failed,
                max_retries=max_retries,
                not_before=now + timedelta(seconds=backoff),
                ready_at=now,
                progress=0,
            )
            events.emit(
                task.execution_id,
                "task.retrying",
                task_key=task.key,
                payload={"retry": failed, "of": max_retries, "backoff_sec": backoff},
            )
            transaction.on_commit(lambda: schedule_dispatch(task.pool, backoff))
        else:
            move_task(
                task.pk,
                TaskStatus.FAILED,
                TaskStatus.DEAD,
                stop_reason=StopReason.RETRIES,
                failed_attempts=failed,
                max_retries=max_retries,
                finished_at=now,
            )
            events.emit(
                task.execution_id,
                "task.dead",
                task_key=task.key,
                payload={"attempts": attempt.number, "error": error[:500]},
            )
            block_dependents(task.execution_id)
            dispatch_after_commit([task.pool])
            maybe_finish_work(task.execution_id)
    return True


def attempt_stop_for_budget(attempt_id, *, usage=None) -> bool:
    """The budget stopped an agent between two model calls: the attempt and its task are cancelled
    for the budget (its calls billed), and the execution stops as when the budget refuses a dispatch."""
    now = timezone.now()
    attempt = attempt_to_close(attempt_id)
    task = attempt.task
    with transaction.atomic():
        lock_execution(task.execution_id)
        if not close_attempt(
            attempt, usage, AttemptStatus.CANCELLED, finished_at=now, error=StopReason.BUDGET.label
        ):
            return False
        if not move_task(
            task.pk,
            TaskStatus.RUNNING,
            TaskStatus.CANCELLED,
            finished_at=now,
            stop_reason=StopReason.BUDGET,
            error=StopReason.BUDGET.label,
            add=usage.task_increments() if usage else None,
        ):
            return False
        events.emit(
            task.execution_id,
            "task.cancelled",
            task_key=task.key,
            payload={"reason": StopReason.BUDGET.label},
        )
        block_dependents(task.execution_id)
        if not stop_for_budget(task.execution_id):
            events.emit(task.execution_id, "execution.budget_exceeded", payload={"cancelled": [task.key]})
    return True


def log_task_failure(task: Task, attempt: Attempt, error: str, failed: int, max_retries: int, now) -> None:
    elapsed = (now - attempt.started_at).total_seconds()
    log.warning(
        "%s Failed %s (%s after %.0fs + %d/%d retries) execution=%s",
        task.pool.upper(),
        task.key,
        error[:120],
        elapsed,
        min(failed, max_retries),
        max_retries,
        task.execution_id,
    )


def schedule_dispatch(pool: str, delay_sec: float) -> None:
    """Dispatch now when there is no backoff; otherwise the reaper picks the task up when it is due."""
    if delay_sec <= 0:
        dispatch_ready_tasks(pool)


def attempt_duration(started, finished) -> float:
    return round((finished - started).total_seconds(), 3)
