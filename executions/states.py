"""Every status and kind of an execution's rows, and which status changes are allowed.

The tables below are the state machines of DESIGN.md; `executions.transitions` is the one way to
change a status, and refuses a change that is not in them. Nothing else in the code lists
statuses: it asks these sets.
"""

from django.db import models


class ExecutionStatus(models.TextChoices):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"  # planned; the client approves the plan and its fee first
    EXECUTING = "executing"
    AGGREGATING = "aggregating"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


class ApprovalMode(models.TextChoices):
    """Whether a planned execution starts at once or waits for the client to approve its plan."""

    AUTO = "auto", "starts once planned"
    PLAN = "plan", "waits for the client to approve the plan and its fee"


class DeliveryStatus(models.TextChoices):
    """A webhook delivery: retried while pending; the other statuses are final."""

    PENDING = "pending"
    DELIVERED = "delivered"  # the receiver answered 2xx
    GONE = "gone", "gone (410: the URL is stopped)"
    REFUSED = "refused", "refused (the URL points where webhooks may not go)"
    FAILED = "failed", "failed (retries exhausted)"


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
    INTERFACE = "interface", "interface mismatch"  # a file deviates from the plan's contract
    OWNERSHIP = "ownership", "ownership"  # a task wrote outside the paths the contract gives it
    INTEGRATION = "integration", "integration gate"  # the merged project fails its compile or tests
    MERGE = "merge", "merge conflict"  # two tasks' commits (or a task and main) edit the same lines


S, T = ExecutionStatus, TaskStatus

EXECUTION_TERMINAL = frozenset({S.COMPLETED, S.PARTIAL, S.FAILED, S.CANCELLED, S.BUDGET_EXCEEDED})
# The endings that delivered planned work (a partial delivers some).
EXECUTION_DELIVERED = frozenset({S.COMPLETED, S.PARTIAL})
EXECUTION_LIVE = frozenset({S.PLANNING, S.AWAITING_APPROVAL, S.EXECUTING, S.AGGREGATING})
EXECUTION_RETRYABLE = frozenset({S.PARTIAL, S.FAILED})

TASK_TERMINAL = frozenset({T.SUCCEEDED, T.DEAD, T.BLOCKED, T.CANCELLED})
# A task in one of these can still make progress: the work phase is not over.
TASK_OPEN = frozenset({T.PENDING, T.READY, T.QUEUED, T.RUNNING, T.FAILED})
TASK_ACTIVE = frozenset({T.QUEUED, T.RUNNING})  # holding a pool slot
TASK_LOST = frozenset({T.DEAD, T.BLOCKED, T.CANCELLED})  # dependents of these are blocked
TASK_REOPENABLE = frozenset({T.DEAD, T.BLOCKED})  # what a client's retry gives a new chance

DELIVERY_FINAL = frozenset(
    {DeliveryStatus.DELIVERED, DeliveryStatus.GONE, DeliveryStatus.REFUSED, DeliveryStatus.FAILED}
)

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
    S.PLANNING: frozenset({S.EXECUTING, S.AWAITING_APPROVAL, S.FAILED, S.CANCELLED}),
    # approved → executing; rejected, expired or cancelled → cancelled
    S.AWAITING_APPROVAL: frozenset({S.EXECUTING, S.CANCELLED}),
    S.EXECUTING: frozenset({S.AGGREGATING, S.CANCELLED}),
    # aggregating → executing: the contract checks, the integration gate or a merge conflict with
    # main started a fix round.
    S.AGGREGATING: frozenset({S.EXECUTING, S.COMPLETED, S.PARTIAL, S.FAILED, S.BUDGET_EXCEEDED, S.CANCELLED}),
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


DELIVERY_TRANSITIONS: dict[str, frozenset[str]] = {
    DeliveryStatus.PENDING: DELIVERY_FINAL,
    # resent from the admin or the console: the same delivery id, a new round of retries
    **{status: frozenset({DeliveryStatus.PENDING}) for status in DELIVERY_FINAL},
}


class TransitionNotAllowed(ValueError):
    """A move the transition table does not allow: a bug in the caller, never a race (races lose the
    compare-and-set instead)."""


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
