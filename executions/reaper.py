"""The reaper: notices what no worker will report, and sends again what Redis may have lost.

One pass loses attempts whose worker process is gone (seen on this machine) or whose lease lapsed
(their worker died: the task is retried at once), expires those whose deadline passed (their
worker hung: counts as a failure), resends the message of a task queued for too long (the
dispatch number makes the original, should it still arrive, a no-op), resends a phase message
(planning, aggregation) that no worker took, dispatches every pool, cancels executions whose plan
approval expired, and sends the webhooks that are due (retries, and messages lost on the way).
It runs in a process of its own (`manage.py reaper`, which `make run` starts), a pass every
OPENCLAW_REAPER_INTERVAL_SEC; passes are idempotent, so several reapers may run.
"""

from datetime import timedelta

import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from dramatiq import get_broker

from pools.models import WorkerPool

from . import messages
from .approval import expire_approvals
from .attempts import attempt_fail
from .dispatch import dispatch_ready_tasks
from .models import Attempt, Execution, Task
from .states import AttemptStatus, ExecutionStatus, TaskStatus
from .webhooks import webhooks_send_due
from .worker_identity import gone_announced, process_gone

# A deadline overrun is judged a little late, so a worker's own timeout wins the race.
DEADLINE_GRACE_SEC = 5


def dead_announced_workers() -> list[str]:
    client = getattr(get_broker(), "client", None)  # a Redis broker's (tests may use a stub)
    if client is None:
        return []
    try:
        return gone_announced(client)
    except redis.RedisError:  # Redis away: leases and the requeue delay still cover the dead
        return []


def reap(now=None) -> dict:
    """One pass of the reaper: expire lost and overdue attempts, resend lost messages, dispatch."""
    now = now or timezone.now()
    stats = {"lost": 0, "expired": 0, "resent": 0, "dispatched": 0, "phases": 0}
    running = Attempt.objects.filter(status=AttemptStatus.RUNNING)
    gone = [w for w in running.values_list("worker", flat=True).distinct() if process_gone(w)]
    gone += dead_announced_workers()
    for attempt_id in running.filter(worker__in=gone).values_list("id", flat=True):
        if attempt_fail(attempt_id, "worker lost: its process is gone", outcome=AttemptStatus.LOST):
            stats["lost"] += 1
    for attempt_id in running.filter(lease_expires_at__lt=now).values_list("id", flat=True):
        if attempt_fail(attempt_id, "worker lost: lease not renewed", outcome=AttemptStatus.LOST):
            stats["lost"] += 1
    overdue = now - timedelta(seconds=DEADLINE_GRACE_SEC)
    for attempt_id, timeout in Attempt.objects.filter(
        status=AttemptStatus.RUNNING, deadline_at__lt=overdue
    ).values_list("id", "task__timeout_sec"):
        if attempt_fail(attempt_id, f"timeout after {timeout}s", outcome=AttemptStatus.EXPIRED):
            stats["expired"] += 1
    # A queued task whose message never started (Redis lost it): send the same dispatch again;
    # the dispatch number makes the original, should it still arrive, a no-op.
    # A dead worker may also have taken messages it never started: when one is found, every queued
    # task is sent again at once rather than after the wait (a duplicate of a message still in
    # Redis is a no-op).
    stale = now if gone else now - timedelta(seconds=settings.OPENCLAW_REQUEUE_AFTER_SEC)
    for task_id, dispatch_no, pool in Task.objects.filter(
        status=TaskStatus.QUEUED, queued_at__lt=stale
    ).values_list("id", "dispatch_count", "pool"):
        if Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED, dispatch_count=dispatch_no).update(
            queued_at=now
        ):
            messages.send_run_task(task_id, dispatch_no, pool)
            stats["resent"] += 1
    # A phase whose message was taken holds a lease while its model call runs: resent only when no
    # worker holds it (its worker died), so a long plan or synthesis call never runs twice at once.
    unleased = Q(phase_lease_until__isnull=True) | Q(phase_lease_until__lt=now)
    for execution_id, status in (
        Execution.objects.filter(
            status__in=[ExecutionStatus.PLANNING, ExecutionStatus.AGGREGATING], phase_sent_at__lt=stale
        )
        .filter(unleased)
        .values_list("id", "status")
    ):
        if Execution.objects.filter(pk=execution_id, status=status, phase_sent_at__lt=stale).update(
            phase_sent_at=now
        ):
            (messages.send_plan if status == ExecutionStatus.PLANNING else messages.send_aggregate)(
                execution_id
            )
            stats["phases"] += 1
    for pool in WorkerPool.objects.filter(enabled=True).values_list("name", flat=True):
        stats["dispatched"] += dispatch_ready_tasks(pool)
    stats["approvals_expired"] = expire_approvals(now)
    stats["webhooks"] = webhooks_send_due(now)
    return stats
