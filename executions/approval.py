"""Plan approval: an execution whose client approves plans (`approval: plan`) waits in
`awaiting_approval` after planning, with its plan, estimates and quoted fee and no task yet.

Approving starts it (awaiting_approval → executing): the fee is charged and the tasks are created
and dispatched, as planning does for everyone else. An approval may carry an edited task list,
validated like a model's plan and routed and priced again; the fee charged is then the edited
plan's. Rejecting, or leaving it past OPENCLAW_APPROVAL_TTL_HOURS, cancels it with no fee; the
planning calls stay on the ledger (they were made).
"""

import logging

from django.db import transaction
from django.utils import timezone

from pools.models import EngineSettings
from pools.storable import unstorable_character

from . import events
from .agent_router import ParallelDisabled
from .models import Execution
from .planning import PlanFigures, execution_start, plan_figures, pool_limits
from .pm_coordinator import PlanInvalid, validate_plan
from .result_aggregator import finish
from .states import ExecutionStatus
from .transitions import lock_execution

log = logging.getLogger("openclaw.pm")


class ApprovalRefused(Exception):
    """The approval or rejection cannot be done; `conflict`: because of the execution's status
    (409), else because of what was asked (an invalid plan: 422)."""

    def __init__(self, reason: str, *, conflict: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


def _not_awaiting(execution: Execution, action: str) -> ApprovalRefused:
    execution.refresh_from_db(fields=["status"])
    return ApprovalRefused(
        f"execution is {execution.status}; only an execution awaiting approval can be {action}"
    )


def execution_approve(execution: Execution, *, by: str, tasks: list | None = None) -> Execution:
    """awaiting_approval → executing, with the plan as quoted or, given `tasks`, as edited.

    Raises ApprovalRefused: the execution is not awaiting approval (or its approval expired), or
    the edited plan is invalid."""
    execution.refresh_from_db()
    if execution.status != ExecutionStatus.AWAITING_APPROVAL:
        raise _not_awaiting(execution, "approved")
    if execution.approval_expires_at and execution.approval_expires_at <= timezone.now():
        execution_expire(execution)
        raise ApprovalRefused("the approval expired; the execution is cancelled")
    notes: list[str] = []
    if tasks is None:
        figures = PlanFigures.from_record(execution)
    elif unstorable := unstorable_character(tasks):
        raise ApprovalRefused(f"the edited plan contains {unstorable}", conflict=False)
    else:
        # Read and priced before the write lock is taken, like planning.
        engine = EngineSettings.current()
        try:
            validated, notes = validate_plan(
                {"tasks": tasks}, pool_limits(), max_tasks=engine.max_tasks_per_plan
            )
            figures = plan_figures(execution, validated, engine=engine)
        except PlanInvalid as exc:
            raise ApprovalRefused(f"the edited plan is invalid: {exc}", conflict=False) from None
        except ParallelDisabled as exc:
            raise ApprovalRefused(str(exc)) from None
    model = {k: execution.plan.get(k, "") for k in ("model", "model_fallback")}
    with transaction.atomic():
        lock_execution(execution.pk)
        events.emit(
            execution.pk,
            "execution.approved",
            payload={
                "by": by,
                "edited": tasks is not None,
                "tasks": len(figures.tasks),
                "fee_usd": str(figures.fee),
            },
        )
        started = execution_start(
            execution,
            figures,
            expected=ExecutionStatus.AWAITING_APPROVAL,
            model=model,
            approval_expires_at=None,
            **(
                {"plan_notes": [*execution.plan_notes, *(f"edited plan: {n}" for n in notes)]}
                if notes
                else {}
            ),
        )
        if not started:
            transaction.set_rollback(True)
    if not started:
        raise _not_awaiting(execution, "approved")
    log.info(
        "PM %s approved by %s (%s plan, fee $%s)",
        execution.pk,
        by,
        "edited" if tasks else "quoted",
        figures.fee,
    )
    execution.refresh_from_db()
    return execution


def execution_reject(execution: Execution, *, by: str) -> Execution:
    """awaiting_approval → cancelled, no fee. Raises ApprovalRefused when it is not awaiting approval."""
    if not _cancel_awaiting(execution, f"Plan rejected by {by}; nothing was charged but the planning."):
        raise _not_awaiting(execution, "rejected")
    log.info("PM %s rejected by %s", execution.pk, by)
    execution.refresh_from_db()
    return execution


def execution_expire(execution: Execution) -> bool:
    """awaiting_approval → cancelled for an approval past its time; False when it moved on."""
    return _cancel_awaiting(
        execution,
        "The plan was not approved in time; the execution is cancelled and nothing was charged but the "
        "planning.",
    )


def _cancel_awaiting(execution: Execution, response: str) -> bool:
    execution.refresh_from_db()
    return (
        finish(
            execution,
            ExecutionStatus.CANCELLED,
            response=response,
            quality=None,
            expected=ExecutionStatus.AWAITING_APPROVAL,
        )
        is not None
    )


def expire_approvals(now=None) -> int:
    """The reaper's part: cancel every execution whose approval expired; returns how many."""
    now = now or timezone.now()
    expired = 0
    for execution in Execution.objects.filter(
        status=ExecutionStatus.AWAITING_APPROVAL, approval_expires_at__lte=now
    ):
        expired += execution_expire(execution)
    return expired
