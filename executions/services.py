"""Services: every mutation of an execution from the outside (API, console, Slack, CLI)."""

import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pools.storable import unstorable_character

from . import events, messages, projects, webhooks
from .dispatch import dispatch_after_commit
from .models import Client, Execution, Task
from .result_aggregator import finish
from .states import (
    EXECUTION_LIVE,
    EXECUTION_RETRYABLE,
    TASK_OPEN,
    TASK_REOPENABLE,
    ApprovalMode,
    AttemptStatus,
    ExecutionStatus,
    StopReason,
    TaskStatus,
)
from .task_graph import block_dependents, maybe_finish_work, promote_dependents
from .transitions import close_attempts_of_task, lock_execution, move_execution, move_task

log = logging.getLogger("openclaw.pm")


class RequestRefused(ValueError):
    """A request that breaks a limit: nothing is stored."""


def execution_create(
    *,
    client: Client,
    message: str,
    session_key: str,
    project: str = "",
    mode: str = "auto",
    force_parallel: bool = False,
    budget_usd: Decimal | None = None,
    approval: str | None = None,
    callback_url: str | None = None,
    follows: Execution | None = None,
) -> Execution:
    """Store a new request and queue its planning on the control queue.

    Every door (API, console, Slack, CLI) comes through here, so the limits hold for all of them.
    `approval` and `callback_url` default to the client's; `follows`: the execution this request
    follows up (same client, same project)."""
    if not message or not message.strip():
        raise RequestRefused("the request is empty")
    unstorable = unstorable_character([message, session_key, callback_url])
    if unstorable:
        raise RequestRefused(f"the request contains {unstorable}")
    if len(message) > settings.OPENCLAW_MAX_MESSAGE_CHARS:
        raise RequestRefused(f"the request is longer than {settings.OPENCLAW_MAX_MESSAGE_CHARS} characters")
    problem = projects.name_problem(project) if project else None
    if problem:
        raise RequestRefused(f"project: {problem}")
    if budget_usd is None:
        budget_usd = client.default_budget_usd
    approval = approval or client.default_approval
    if approval not in ApprovalMode.values:
        raise RequestRefused(f"approval must be one of {', '.join(ApprovalMode.values)}")
    callback_url = client.default_callback_url if callback_url is None else callback_url.strip()
    if callback_url:
        try:
            webhooks.callback_url_check(callback_url)
        except webhooks.CallbackUrlRefused as exc:
            raise RequestRefused(str(exc)) from None
    if follows is not None:
        if follows.client_id != client.pk:
            raise RequestRefused("a follow-up belongs to the client of the execution it follows")
        project = project or follows.project
    now = timezone.now()
    execution_id = Execution.new_id(session_key)
    project = project or execution_id  # a request without a project gets a project of its own
    with transaction.atomic():
        projects.project_register(client=client, name=project)
        execution = Execution.objects.create(
            id=execution_id,
            client=client,
            session_key=session_key,
            project=project,
            message=message,
            requested_mode=mode,
            force_parallel=force_parallel,
            budget_usd=budget_usd,
            approval=approval,
            callback_url=callback_url,
            follows=follows,
            phase_sent_at=now,
        )
        events.emit(
            execution.pk,
            "execution.created",
            payload={
                "mode": mode,
                "project": project,
                "approval": approval,
                **({"follows": follows.pk} if follows is not None else {}),
            },
        )
        transaction.on_commit(lambda: messages.send_plan(execution.pk))
    log.info("PM Received %s from %s: %r", execution.pk, client.name, message[:80])
    return execution


def execution_cancel(execution: Execution, *, by: str = "client") -> bool:
    """Cancel: no new task starts; running attempts are abandoned (their tokens are still billed)."""
    now = timezone.now()
    with transaction.atomic():
        lock_execution(execution.pk)
        current = (
            Execution.objects.filter(pk=execution.pk, status__in=EXECUTION_LIVE)
            .values_list("status", flat=True)
            .first()
        )
        if current is None:
            return False
        tasks = list(Task.objects.filter(execution=execution, status__in=TASK_OPEN))
        for task in tasks:
            if move_task(
                task.pk,
                task.status,
                TaskStatus.CANCELLED,
                finished_at=now,
                stop_reason=StopReason.CANCELLED,
                error=f"cancelled by {by}",
            ):
                close_attempts_of_task(task.pk, AttemptStatus.CANCELLED, finished_at=now)
                events.emit(execution.pk, "task.cancelled", task_key=task.key)
        dispatch_after_commit({t.pool for t in tasks})
        execution.refresh_from_db()
        return (
            finish(
                execution,
                ExecutionStatus.CANCELLED,
                response=f"Cancelled by {by}.",
                quality=None,
                expected=current,
            )
            is not None
        )


def execution_retry(execution: Execution) -> int:
    """Give dead and blocked tasks a new chance; returns how many tasks were reopened.

    All or nothing: when no task can be reopened (or the execution has used its retries) nothing
    changes, and a finished execution stays as it ended."""
    now = timezone.now()
    with transaction.atomic():
        lock_execution(execution.pk)
        retries = Execution.objects.filter(pk=execution.pk).values_list("retries", flat=True).first()
        if retries is None or retries >= settings.OPENCLAW_MAX_RETRIES_PER_EXECUTION:
            return 0
        if not move_execution(
            execution.pk,
            EXECUTION_RETRYABLE,
            ExecutionStatus.EXECUTING,
            finished_at=None,
            final_response="",
            quality_score=None,
            retries=retries + 1,
        ):
            return 0
        reopened = 0
        for task in Task.objects.filter(execution=execution, status__in=TASK_REOPENABLE):
            target = (
                TaskStatus.READY
                if task.status == TaskStatus.DEAD or not task.blocked_by
                else TaskStatus.PENDING
            )
            if move_task(
                task.pk,
                task.status,
                target,
                stop_reason=StopReason.NONE,
                failed_attempts=0,
                not_before=None,
                error="",
                finished_at=None,
                progress=0,
                ready_at=now if target == TaskStatus.READY else None,
            ):
                reopened += 1
                events.emit(
                    execution.pk, "task.retry_requested", task_key=task.key, payload={"status": target}
                )
        if not reopened:
            transaction.set_rollback(True)  # nothing to retry: the execution stays as it ended
            return 0
        events.emit(execution.pk, "execution.retrying", payload={"tasks": reopened, "retry": retries + 1})
        pools = promote_dependents(execution.pk) | set(
            Task.objects.filter(execution=execution, status=TaskStatus.READY).values_list("pool", flat=True)
        )
        block_dependents(execution.pk)
        dispatch_after_commit(pools)
        maybe_finish_work(execution.pk)
    return reopened
