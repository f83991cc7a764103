"""Slack services: who may do what, and starting an execution from a Slack request exactly once."""

import logging

from django.db import IntegrityError, transaction

from executions.models import Client, Execution
from executions.services import execution_create

from .models import SlackEventReceipt, SlackThread, SlackUserMapping, SlackWorkspace

log = logging.getLogger("openclaw.slack")


def slack_workspace_link(*, team_id: str, client: Client, name: str = "") -> SlackWorkspace:
    """Link a workspace to the client its requests are billed to (re-linking moves it)."""
    defaults = {"client": client}
    if name:
        defaults["name"] = name
    workspace, _ = SlackWorkspace.objects.update_or_create(team_id=team_id, defaults=defaults)
    return workspace


def client_for_slack_user(*, team_id: str, user_id: str) -> Client | None:
    """The client a Slack user acts for, or None when the workspace is unlinked or the user is not allowed."""
    mapping = (
        SlackUserMapping.objects.select_related("client").filter(team_id=team_id, user_id=user_id).first()
    )
    if mapping is not None and not mapping.allowed:
        return None
    if mapping is not None and mapping.client is not None:
        client = mapping.client
    else:
        workspace = SlackWorkspace.objects.select_related("client").filter(team_id=team_id).first()
        if workspace is None or (workspace.restrict_to_mapped_users and mapping is None):
            return None
        client = workspace.client
    return client if client.is_active else None


def slack_user_may_act(*, team_id: str, user_id: str, execution: Execution) -> bool:
    """A user may cancel or retry an execution only when they act for the client it is billed to."""
    client = client_for_slack_user(team_id=team_id, user_id=user_id)
    return client is not None and client.pk == execution.client_id


def slack_delivery_claim(*, key: str, team_id: str) -> SlackEventReceipt | None:
    """Record a delivery (event_id, trigger_id); None when it was seen before (a Slack retry)."""
    try:
        with transaction.atomic():
            return SlackEventReceipt.objects.create(key=key, team_id=team_id)
    except IntegrityError:
        return None


def slack_request_start(
    *, receipt_id: int, team_id: str, user_id: str, channel_id: str, text: str, thread_ts: str = ""
) -> Execution | None:
    """Create the execution and its Slack thread for a claimed delivery, once however often it is called."""
    client = client_for_slack_user(team_id=team_id, user_id=user_id)
    if client is None:
        log.info("Slack request %s refused: %s/%s may not start executions", receipt_id, team_id, user_id)
        return None
    with transaction.atomic():
        # The receipt row is the lock: a redelivered message finds its execution already set.
        receipt = SlackEventReceipt.objects.select_for_update().get(pk=receipt_id)
        if receipt.execution_id:
            return None
        execution = execution_create(
            client=client, message=text, session_key=f"slack-{team_id}-{user_id}", project="slack"
        )
        SlackThread.objects.create(
            execution=execution, team_id=team_id, user_id=user_id, channel_id=channel_id, thread_ts=thread_ts
        )
        SlackEventReceipt.objects.filter(pk=receipt_id).update(execution=execution)
    log.info("Slack request %s from %s/%s started %s", receipt.key, team_id, user_id, execution.pk)
    return execution
