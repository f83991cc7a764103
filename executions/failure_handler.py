"""Failed attempts, retries with backoff, dead tasks, and the reaper that notices lost workers.

An attempt fails by an error (provider error, timeout, malformed reply) or expires (its deadline
passed while its worker hung). Either counts against the pool's `max_retries`. An attempt whose
lease was not renewed lost its worker (SIGKILL, crash): the task goes back to `ready` at once and
the loss does not count, up to MAX_LOST_ATTEMPTS losses.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pools.models import WorkerPool, pool_queue_name

from . import events
from .models import Attempt, Execution, ExecutionStatus, Task, TaskStatus
from .parallel_executor import (
    attempt_duration,
    attempt_to_close,
    block_dependents,
    cas_task,
    close_attempt,
    dispatch_after_commit,
    dispatch_ready_tasks,
    lock_execution,
    maybe_finish_work,
)

log = logging.getLogger("openclaw.failures")

MAX_LOST_ATTEMPTS = 3
# A deadline overrun is judged a little late, so a worker's own timeout wins the race.
DEADLINE_GRACE_SEC = 5


def attempt_fail(attempt_id, error: str, *, usage=None, outcome: str = "failed") -> bool:
    """Close a running attempt as failed/expired/lost and decide: retry after backoff, or dead."""
    from . import billing

    now = timezone.now()
    usage = billing.AttemptUsage.of(*usage) if usage is not None else None
    with transaction.atomic():
        attempt = attempt_to_close(attempt_id)
        task = attempt.task
        lock_execution(task.execution_id)
        if not close_attempt(attempt, usage, status=outcome, finished_at=now, error=error[:4000]):
            return False
        if not cas_task(
            task.pk,
            TaskStatus.RUNNING,
            status=TaskStatus.FAILED,
            error=error[:4000],
            add=usage.task_increments() if usage else None,
        ):
            return False
        pool = WorkerPool.objects.filter(name=task.pool).first()
        lost = task.attempts.filter(status="lost").count()
        counts = outcome != "lost" or lost > MAX_LOST_ATTEMPTS
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
            cas_task(
                task.pk,
                TaskStatus.FAILED,
                status=TaskStatus.READY,
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
            cas_task(
                task.pk,
                TaskStatus.FAILED,
                status=TaskStatus.DEAD,
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


def reap(now=None) -> dict:
    """One pass of the reaper: expire lost and overdue attempts, resend lost messages, dispatch."""
    from pools.tasks import send_run_task

    from .tasks import aggregate_execution, plan_execution

    now = now or timezone.now()
    stats = {"lost": 0, "expired": 0, "resent": 0, "dispatched": 0, "phases": 0}
    for attempt_id in Attempt.objects.filter(status="running", lease_expires_at__lt=now).values_list(
        "id", flat=True
    ):
        if attempt_fail(attempt_id, "worker lost: lease not renewed", outcome="lost"):
            stats["lost"] += 1
    overdue = now - timedelta(seconds=DEADLINE_GRACE_SEC)
    for attempt_id, timeout in Attempt.objects.filter(status="running", deadline_at__lt=overdue).values_list(
        "id", "task__timeout_sec"
    ):
        if attempt_fail(attempt_id, f"timeout after {timeout}s", outcome="expired"):
            stats["expired"] += 1
    # A queued task whose message never started (Redis lost it): send the same dispatch again;
    # the dispatch number makes the original, should it still arrive, a no-op.
    stale = now - timedelta(seconds=settings.OPENCLAW_REQUEUE_AFTER_SEC)
    for task_id, dispatch_no, pool in Task.objects.filter(
        status=TaskStatus.QUEUED, queued_at__lt=stale
    ).values_list("id", "dispatch_count", "pool"):
        if Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED, dispatch_count=dispatch_no).update(
            queued_at=now
        ):
            send_run_task(task_id, dispatch_no, pool_queue_name(pool))
            stats["resent"] += 1
    for execution_id, status in Execution.objects.filter(
        status__in=[ExecutionStatus.PLANNING, ExecutionStatus.AGGREGATING], phase_sent_at__lt=stale
    ).values_list("id", "status"):
        if Execution.objects.filter(pk=execution_id, status=status, phase_sent_at__lt=stale).update(
            phase_sent_at=now
        ):
            (plan_execution if status == ExecutionStatus.PLANNING else aggregate_execution).send(execution_id)
            stats["phases"] += 1
    for pool in WorkerPool.objects.filter(enabled=True).values_list("name", flat=True):
        stats["dispatched"] += dispatch_ready_tasks(pool)
    return stats
