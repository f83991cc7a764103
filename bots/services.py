"""Slack services: who may do what, and starting an execution from a Slack request exactly once."""

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import IntegrityError, transaction

from executions.models import Client, Execution
from executions.services import execution_create
from executions.throttling import SLACK_REQUESTS

from .models import SlackEventReceipt, SlackThread, SlackUserMapping, SlackWorkspace

log = logging.getLogger("openclaw.slack")


@transaction.atomic
def slack_workspace_link(
    *, team_id: str, client: Client, name: str = "", users: Iterable[str] = (), any_member: bool = False
) -> SlackWorkspace:
    """Link a workspace to the client its requests are billed to (re-linking moves it) and allow
    `users` to act for it; only with `any_member` may every member of the workspace act."""
    defaults = {"client": client, "restrict_to_mapped_users": not any_member}
    if name:
        defaults["name"] = name
    workspace, _ = SlackWorkspace.objects.update_or_create(team_id=team_id, defaults=defaults)
    for user_id in users:
        SlackUserMapping.objects.update_or_create(
            team_id=team_id, user_id=user_id, defaults={"allowed": True}
        )
    return workspace


def client_for_slack_user(*, team_id: str, user_id: str, user_team: str = "") -> Client | None:
    """The client a Slack user acts for, or None when the workspace is unlinked or the user is not allowed.

    `team_id` is the workspace the request came from, `user_team` the user's own workspace when
    Slack says (Slack Connect: a guest from another organisation in a shared channel). Without an
    allowed mapping, only the workspace's own members act for it, and only when it is open to all.
    """
    mapping = (
        SlackUserMapping.objects.select_related("client").filter(team_id=team_id, user_id=user_id).first()
    )
    if mapping is not None and not mapping.allowed:
        return None
    if mapping is not None and mapping.client is not None:
        client = mapping.client
    else:
        workspace = SlackWorkspace.objects.select_related("client").filter(team_id=team_id).first()
        if workspace is None:
            return None
        if mapping is None and (workspace.restrict_to_mapped_users or user_team not in ("", team_id)):
            return None
        client = workspace.client
    return client if client.is_active else None


def slack_workspace_is_linked(*, team_id: str) -> bool:
    return SlackWorkspace.objects.filter(team_id=team_id).exists()


def slack_user_may_act(*, team_id: str, user_id: str, execution: Execution, user_team: str = "") -> bool:
    """A user may cancel or retry an execution when they act for the client it is billed to and
    either asked for it or are one of the users mapped to act (an open workspace's other members
    may start their own executions, not stop someone else's)."""
    client = client_for_slack_user(team_id=team_id, user_id=user_id, user_team=user_team)
    if client is None or client.pk != execution.client_id:
        return False
    requested = SlackThread.objects.filter(execution=execution, team_id=team_id, user_id=user_id).exists()
    return (
        requested or SlackUserMapping.objects.filter(team_id=team_id, user_id=user_id, allowed=True).exists()
    )


def slack_message_too_long(text: str) -> bool:
    """Longer than the API and the console accept (Slack itself sends up to ~40,000 characters)."""
    return len(text) > settings.OPENCLAW_MAX_MESSAGE_CHARS


def slack_start_retry_after(*, team_id: str, user_id: str) -> int:
    """Seconds until the user may start another execution; 0 when they may now."""
    return SLACK_REQUESTS.retry_after(f"{team_id}/{user_id}")


def slack_start_counted(*, team_id: str, user_id: str) -> None:
    """Count a started request against the user's `OPENCLAW_SLACK_REQUESTS_PER_MINUTE`."""
    SLACK_REQUESTS.hit(f"{team_id}/{user_id}")


def slack_delivery_claim(*, key: str, team_id: str) -> SlackEventReceipt | None:
    """Record a delivery (event_id, trigger_id); None when it was seen before (a Slack retry)."""
    try:
        with transaction.atomic():
            return SlackEventReceipt.objects.create(key=key, team_id=team_id)
    except IntegrityError:
        return None


def slack_thread_followed(*, team_id: str, channel_id: str, thread_ts: str) -> SlackThread | None:
    """The thread row of the execution a Slack thread follows now (its latest), if it follows one."""
    if not thread_ts:
        return None
    return (
        SlackThread.objects.select_related("execution")
        .filter(team_id=team_id, channel_id=channel_id, thread_ts=thread_ts)
        .order_by("-created_at", "-pk")
        .first()
    )


def slack_request_start(
    *, receipt_id: int, team_id: str, user_id: str, channel_id: str, text: str, thread_ts: str = ""
) -> Execution | None:
    """Create the execution and its Slack thread for a claimed delivery, once however often it is called.

    In the thread of an execution, the request is a follow-up: an execution of the same client on
    the same project that follows the thread's latest one, and the thread follows it from then on.
    Only the users who may act on that execution (its requester, the mapped users) may follow up."""
    followed = slack_thread_followed(team_id=team_id, channel_id=channel_id, thread_ts=thread_ts)
    parent = followed.execution if followed is not None else None
    if parent is not None:
        allowed = slack_user_may_act(team_id=team_id, user_id=user_id, execution=parent)
        client = parent.client if allowed else None
    else:
        client = client_for_slack_user(team_id=team_id, user_id=user_id)
    if client is None:
        log.info("Slack request %s refused: %s/%s may not start executions", receipt_id, team_id, user_id)
        return None
    if slack_message_too_long(text):  # the listener refuses these; a message queued before may not be
        log.info("Slack request %s refused: %s characters", receipt_id, len(text))
        return None
    with transaction.atomic():
        # The receipt row is the lock: a redelivered message finds its execution already set.
        receipt = SlackEventReceipt.objects.select_for_update().get(pk=receipt_id)
        if receipt.execution_id:
            return None
        # A follow-up in a thread extends the parent's project; a new request gets a project of its own.
        execution = execution_create(
            client=client,
            message=text,
            session_key=f"slack-{team_id}-{user_id}",
            project=parent.project if parent is not None else "",
            follows=parent,
        )
        SlackThread.objects.create(
            execution=execution, team_id=team_id, user_id=user_id, channel_id=channel_id, thread_ts=thread_ts
        )
        SlackEventReceipt.objects.filter(pk=receipt_id).update(execution=execution)
    log.info("Slack request %s from %s/%s started %s", receipt.key, team_id, user_id, execution.pk)
    return execution
