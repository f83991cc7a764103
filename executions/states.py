"""Every status and kind of an execution's rows, and which status changes are allowed.

The tables below are the state machines of DESIGN.md; `executions.transitions` is the one way to
change a status, and refuses a change that is not in them. Nothing else in the code lists
statuses: it asks these sets.
"""

from django.db import models


class ExecutionStatus(models.TextChoices):
    PLANNING = "planning"
    EXECUTING = "executing"
    AGGREGATING = "aggregating"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class TaskKind(models.TextChoices):
    PLAN = "plan", "planned"
    REMEDIATION = "remediation", "remediation"
    REAUDIT = "reaudit", "re-audit"
    REVISION = "revision", "revision"


class StopReason(models.TextChoices):
    """Why a task stopped short of succeeding, when the status alone does not say."""

    NONE = "", "—"
    BUDGET = "budget", "budget exceeded"
    CANCELLED = "cancelled", "cancelled on request"
    DEPENDENCY = "dependency", "a hard dependency was lost"
    RETRIES = "retries", "retries exhausted"


class AttemptStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"  # past its deadline while its worker hung
    LOST = "lost"  # its lease was not renewed: the worker died
    CANCELLED = "cancelled"


class ConflictStatus(models.TextChoices):
    DETECTED = "detected"
    RESOLVING = "resolving"
    RESOLVED = "resolved"
    UNRESOLVED = "unresolved"


class ConflictKind(models.TextChoices):
    SECURITY_FINDING = "security_finding", "security finding"
    SCHEMA_REJECTED = "schema_rejected", "schema rejected"
    FILE_COLLISION = "file_collision", "file collision"
    MERGE = "merge", "merge conflict"


S, T = ExecutionStatus, TaskStatus

EXECUTION_TERMINAL = frozenset({S.COMPLETED, S.PARTIAL, S.FAILED, S.CANCELLED, S.BUDGET_EXCEEDED})
EXECUTION_LIVE = frozenset({S.PLANNING, S.EXECUTING, S.AGGREGATING})
EXECUTION_RETRYABLE = frozenset({S.PARTIAL, S.FAILED})

TASK_TERMINAL = frozenset({T.SUCCEEDED, T.DEAD, T.BLOCKED, T.CANCELLED})
# A task in one of these can still make progress: the work phase is not over.
TASK_OPEN = frozenset({T.PENDING, T.READY, T.QUEUED, T.RUNNING, T.FAILED})
TASK_ACTIVE = frozenset({T.QUEUED, T.RUNNING})  # holding a pool slot
TASK_LOST = frozenset({T.DEAD, T.BLOCKED, T.CANCELLED})  # dependents of these are blocked
TASK_REOPENABLE = frozenset({T.DEAD, T.BLOCKED})  # what a client's retry gives a new chance

ATTEMPT_COUNTED_FAILURES = frozenset({AttemptStatus.FAILED, AttemptStatus.EXPIRED})
# Lost attempts (their worker died) do not count against a task's retries, up to this many.
MAX_LOST_ATTEMPTS = 3
CONFLICT_OPEN = frozenset({ConflictStatus.DETECTED, ConflictStatus.RESOLVING})

# Kinds whose output replaces their parent task's (the parent is the lineage's original).
SUPERSEDING_KINDS = (TaskKind.REMEDIATION, TaskKind.REVISION)

TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    T.PENDING: frozenset({T.READY, T.BLOCKED, T.CANCELLED}),
    T.READY: frozenset({T.QUEUED, T.CANCELLED}),
    T.QUEUED: frozenset({T.RUNNING, T.CANCELLED}),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED}),
    T.FAILED: frozenset({T.READY, T.DEAD, T.CANCELLED}),
    T.DEAD: frozenset({T.READY}),  # a client's retry
    T.BLOCKED: frozenset({T.READY, T.PENDING}),  # a client's retry
    T.SUCCEEDED: frozenset(),
    T.CANCELLED: frozenset(),
}

EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PLANNING: frozenset({S.EXECUTING, S.FAILED, S.CANCELLED}),
    S.EXECUTING: frozenset({S.AGGREGATING, S.CANCELLED}),
    # aggregating → executing: landing met a merge conflict with main, resolved by a new task.
    S.AGGREGATING: frozenset({S.COMPLETED, S.PARTIAL, S.FAILED, S.BUDGET_EXCEEDED, S.CANCELLED, S.EXECUTING}),
    S.PARTIAL: frozenset({S.EXECUTING}),  # a client's retry
    S.FAILED: frozenset({S.EXECUTING}),  # a client's retry
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.BUDGET_EXCEEDED: frozenset(),
}

ATTEMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    AttemptStatus.RUNNING: frozenset(set(AttemptStatus) - {AttemptStatus.RUNNING}),
    **{status: frozenset() for status in AttemptStatus if status != AttemptStatus.RUNNING},
}

CONFLICT_TRANSITIONS: dict[str, frozenset[str]] = {
    ConflictStatus.DETECTED: frozenset(
        {ConflictStatus.RESOLVING, ConflictStatus.RESOLVED, ConflictStatus.UNRESOLVED}
    ),
    # resolving → resolving: the next round of a conflict whose fix did not hold.
    ConflictStatus.RESOLVING: frozenset(
        {ConflictStatus.RESOLVING, ConflictStatus.RESOLVED, ConflictStatus.UNRESOLVED}
    ),
    ConflictStatus.RESOLVED: frozenset(),
    ConflictStatus.UNRESOLVED: frozenset({ConflictStatus.RESOLVED}),  # a client's retry settled it
}


class TransitionNotAllowed(ValueError):
    pass


def check(
    table: dict[str, frozenset[str]], expected: str | frozenset | list | tuple | set, to: str
) -> list[str]:
    """The statuses a row may be in to move to `to`, as a list for the compare-and-set's WHERE;
    raises TransitionNotAllowed for a change the state machine does not have."""
    sources = [expected] if isinstance(expected, str) else list(expected)
    for source in sources:
        if to not in table[source]:
            raise TransitionNotAllowed(f"{source} → {to} is not a transition")
    return sources
