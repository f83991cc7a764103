"""The one way to change a status: a compare-and-set checked against the tables of `states`.

Each function moves rows from the statuses a caller expects to a new one, in one UPDATE whose WHERE
names the expected statuses, and reports whether this caller won. A duplicate or late message
finds the row moved already and changes nothing. A change that is not in the state machine raises
`TransitionNotAllowed` before any SQL runs.

Lock order, in every transaction that changes an execution's tasks: pool rows → execution row
(`lock_execution`) → task → attempt. One order keeps PostgreSQL free of deadlocks between, say, a
cancel and a worker reporting a result. SQLite has no row locks and needs none: its writing
transactions run one at a time.
"""

from collections.abc import Iterable
from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from . import sql
from .models import Attempt, Conflict, Execution, Task
from .states import (
    ATTEMPT_TRANSITIONS,
    CONFLICT_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    TASK_TRANSITIONS,
    AttemptStatus,
    check,
)

Expected = str | Iterable[str]


def lock_execution(execution_id: str) -> None:
    """Take the execution's row lock, first, in every transaction that changes its tasks."""
    sql.lock_rows_of_executions([execution_id])


def lock_executions(execution_ids: Iterable[str]) -> None:
    """`lock_execution` for several executions, in one statement, in id order."""
    sql.lock_rows_of_executions(execution_ids)


def move_task(
    task_id: int,
    expected: Expected,
    to: str,
    *,
    where: dict | None = None,
    add: dict | None = None,
    **changes,
) -> bool:
    """expected → `to` for one task (with other fields `changes`, amounts `add`ed to its totals, and
    extra conditions `where`); True when this caller won."""
    sources = check(TASK_TRANSITIONS, expected, to)
    condition = {"pk": task_id, "status": sources, **(where or {})}
    return sql.update(Task, condition, assign={"status": to, **changes}, add=add) == 1


def move_tasks(
    task_ids: Iterable[int],
    expected: Expected,
    to: str,
    *,
    returning: tuple[str, ...] = ("pk",),
    add: dict | None = None,
    **changes,
) -> list[tuple]:
    """`move_task` for many tasks in one UPDATE … RETURNING; the `returning` fields of those moved."""
    task_ids = list(task_ids)
    if not task_ids:
        return []
    sources = check(TASK_TRANSITIONS, expected, to)
    return sql.update_returning(
        Task, {"pk": task_ids, "status": sources}, returning, assign={"status": to, **changes}, add=add
    )


def move_execution(execution_id: str, expected: Expected, to: str, **changes) -> bool:
    """expected → `to` for an execution; True when this caller won."""
    sources = check(EXECUTION_TRANSITIONS, expected, to)
    return (
        sql.update(Execution, {"pk": execution_id, "status": sources}, assign={"status": to, **changes}) == 1
    )


def claim_phase(execution_id: str, status: str, *, lease_sec: float) -> int | None:
    """Take the lease of the execution's current phase (`status`: planning or aggregating) unless a
        worker holds it; returns this claim's number (1 for the first), or None when another worker
        holds the phase or the execution moved on. The transition into a phase clears both its lease and its
    claims."""
    now = timezone.now()
    won = (
        Execution.objects.filter(pk=execution_id, status=status)
        .filter(Q(phase_lease_until__isnull=True) | Q(phase_lease_until__lt=now))
        .update(phase_lease_until=now + timedelta(seconds=lease_sec), phase_claims=F("phase_claims") + 1)
    )
    if not won:
        return None
    return Execution.objects.filter(pk=execution_id).values_list("phase_claims", flat=True).first()


def close_attempt_row(attempt_id, to: str, *, assign: dict | None = None, add: dict | None = None) -> bool:
    """running → `to` for an attempt (its outcome); True when this caller closed it."""
    check(ATTEMPT_TRANSITIONS, AttemptStatus.RUNNING, to)
    return bool(
        sql.update(
            Attempt,
            {"pk": attempt_id, "status": AttemptStatus.RUNNING},
            assign={**(assign or {}), "status": to},
            add=add,
        )
    )


def close_attempts_of_task(task_id: int, to: str, **changes) -> int:
    """Every running attempt of a task → `to` (a cancelled task's attempt); how many moved."""
    check(ATTEMPT_TRANSITIONS, AttemptStatus.RUNNING, to)
    return Attempt.objects.filter(task_id=task_id, status=AttemptStatus.RUNNING).update(status=to, **changes)


def move_conflict(conflict_id: int, expected: Expected, to: str, **changes) -> bool:
    """expected → `to` for a conflict; True when this caller won."""
    sources = check(CONFLICT_TRANSITIONS, expected, to)
    return Conflict.objects.filter(pk=conflict_id, status__in=sources).update(status=to, **changes) == 1
