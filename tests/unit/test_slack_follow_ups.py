"""The Slack thread of an execution: a message in it from someone who may act is a follow-up
request on the same project that the thread then follows; a plan awaiting approval is approved or
rejected with its buttons, by the requester or a mapped user only."""

import json

import pytest
from django.core.management import call_command
from django.db import transaction

from bots import render
from bots.actors import start_slack_request
from bots.models import SlackEventReceipt, SlackThread
from bots.notifier import thread_sync
from executions.models import Client, Event, Execution, LedgerEntry
from executions.services import execution_create
from tests.factories import make_pools
from tests.fakes.slack_server import block_action_body, thread_message_body
from tests.slack import (
    OTHER_TEAM,
    TEAM,
    USER,
    post,
    queued,
)

THREAD = "1700000000.000100"
JSON = "application/json"


def tracked_execution(client: Client, *, project: str = "bistro", status: str = "completed") -> Execution:
    with transaction.atomic():
        execution = execution_create(
            client=client, message="Build a bistro site", session_key="s", project=project
        )
        SlackThread.objects.create(
            execution=execution, team_id=TEAM, user_id=USER, channel_id="C0PROJECTS", thread_ts=THREAD
        )
    Execution.objects.filter(pk=execution.pk).update(status=status)
    return execution


def test_a_message_in_the_thread_is_a_follow_up_on_the_same_project(
    client, slack_settings, acme, redis_server
):
    parent = tracked_execution(acme)

    body = thread_message_body("Add a gift card page", team_id=TEAM, user_id=USER, thread_ts=THREAD)
    assert post(client, body, content_type=JSON).status_code == 200
    [message] = queued(redis_server, "control")
    assert message.actor_name == "start_slack_request"
    start_slack_request.fn(*message.args, **message.kwargs)
    start_slack_request.fn(*message.args, **message.kwargs)  # delivered twice: started once

    follow_up = Execution.objects.exclude(pk=parent.pk).get()
    assert follow_up.client == acme and follow_up.project == "bistro" and follow_up.follows == parent
    assert follow_up.message == "Add a gift card page"
    thread = SlackThread.objects.get(execution=follow_up)
    assert (thread.channel_id, thread.thread_ts, thread.user_id) == ("C0PROJECTS", THREAD, USER)
    created = Event.objects.get(execution=follow_up, type="execution.created")
    assert created.payload["follows"] == parent.pk and created.payload["project"] == "bistro"

    # The thread now follows the follow-up: the next message follows up on it.
    post(
        client,
        thread_message_body("And a menu", team_id=TEAM, user_id=USER, thread_ts=THREAD),
        content_type=JSON,
    )
    [second] = [m for m in queued(redis_server, "control") if "And a menu" in m.args]
    start_slack_request.fn(*second.args, **second.kwargs)
    assert Execution.objects.get(message="And a menu").follows == follow_up


@pytest.mark.parametrize(
    "who,fields",
    [
        ("U0STRANGER", {}),  # neither the requester nor a mapped user
        (USER, {"subtype": "message_changed"}),  # an edit
        (USER, {"bot_id": "B0OTHER"}),  # a bot (our own posts among them)
        (USER, {"thread_ts": "1600000000.000001"}),  # a thread that follows no execution
        (USER, {"text": "<@UBOT> build a shop"}),  # a mention: the app_mention event has it
    ],
)
def test_other_messages_start_nothing(client, slack_settings, acme, redis_server, who, fields):
    call_command("link_slack", TEAM, "acme", "--any-member")
    tracked_execution(acme)
    fields = dict(fields)
    text = fields.pop("text", "Add a gift card page")
    thread_ts = fields.pop("thread_ts", THREAD)
    body = thread_message_body(text, team_id=TEAM, user_id=who, thread_ts=thread_ts, **fields)

    assert post(client, body, content_type=JSON).status_code == 200
    assert queued(redis_server, "control") == [] and not SlackEventReceipt.objects.exists()


def test_a_mention_in_the_thread_is_a_follow_up_too(client, slack_settings, acme, redis_server):
    from tests.fakes.slack_server import app_mention_body

    parent = tracked_execution(acme)
    raw = json.loads(app_mention_body("add reviews", team_id=TEAM, user_id=USER))
    raw["event"]["thread_ts"] = THREAD
    post(client, json.dumps(raw), content_type=JSON)
    [message] = queued(redis_server, "control")
    start_slack_request.fn(*message.args, **message.kwargs)
    assert Execution.objects.get(message="add reviews").follows == parent


# ---------------------------------------------------------------- approval buttons


@pytest.fixture
def awaiting(acme, slack_settings):
    make_pools()
    execution = tracked_execution(acme, status="awaiting_approval")
    plan = {
        "tasks": [
            {
                "id": "api",
                "pool": "codegen",
                "description": "Build the API",
                "priority": 1,
                "timeout_sec": 60,
                "blocked_by": [],
                "soft_deps": [],
                "context": {},
            }
        ],
        "expected": {"api": 2.0},
        "weights": {"api": 1.0},
    }
    Execution.objects.filter(pk=execution.pk).update(
        approval="plan", plan=plan, quoted_fee_usd="0.80", mode="parallel", estimated_duration_sec=2.0
    )
    execution.refresh_from_db()
    return execution


def test_the_thread_shows_the_plan_with_approve_and_reject(awaiting, fake_slack):
    thread = SlackThread.objects.get(execution=awaiting)
    thread_sync(thread)

    (status,) = fake_slack.channel_messages("C0PROJECTS")
    blocks = status.blocks
    text = json.dumps(blocks)
    assert "awaits your approval" in text and "`api` codegen" in text and "fee on approval $0.80" in text
    actions = [e["action_id"] for e in blocks[-1]["elements"]]
    assert actions == [render.APPROVE_ACTION, render.REJECT_ACTION, render.CONSOLE_ACTION]


def test_approve_in_slack_starts_the_plan_for_the_requester_only(client, awaiting, redis_server):
    stranger = block_action_body(render.APPROVE_ACTION, awaiting.pk, team_id=OTHER_TEAM, user_id="U0BOB")
    post(client, stranger)
    assert Execution.objects.get(pk=awaiting.pk).status == "awaiting_approval"

    post(client, block_action_body(render.APPROVE_ACTION, awaiting.pk, team_id=TEAM, user_id=USER))
    approved = Execution.objects.get(pk=awaiting.pk)
    assert (
        approved.status == "executing" and approved.fee_usd == LedgerEntry.objects.get(kind="fee").amount_usd
    )
    assert (
        Event.objects.get(execution=awaiting, type="execution.approved").payload["by"]
        == f"<@{USER}> in Slack"
    )

    post(client, block_action_body(render.REJECT_ACTION, awaiting.pk, team_id=TEAM, user_id=USER))
    assert Execution.objects.get(pk=awaiting.pk).status == "executing"
    notices = [(m.args[1], m.args[3]) for m in queued(redis_server, "slack")]
    assert any(
        "only an execution awaiting approval can be rejected" in text and to == USER for text, to in notices
    )


def test_reject_in_slack_cancels_with_no_fee(client, awaiting):
    post(client, block_action_body(render.REJECT_ACTION, awaiting.pk, team_id=TEAM, user_id=USER))
    rejected = Execution.objects.get(pk=awaiting.pk)
    assert rejected.status == "cancelled" and rejected.fee_usd == 0
    assert not LedgerEntry.objects.filter(kind="fee").exists()
