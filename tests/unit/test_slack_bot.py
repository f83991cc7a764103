"""The Slack bot in one process: signed requests to /slack/events, the listeners, the thread notifier.

Slack's side is tests/fakes/slack_server.py over real HTTP, so slack_sdk and slack-bolt run
unmodified; Dramatiq messages land in the real (test) Redis and are read back from it.
"""

import json
import logging
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from bots import render
from bots.actors import start_slack_request
from bots.models import SlackEventReceipt, SlackThread, SlackUserMapping, SlackWorkspace
from bots.notifier import on_execution_event, thread_sync, thread_sync_run
from bots.services import client_for_slack_user, slack_user_may_act
from executions import throttling
from executions.models import Client, Conflict, Execution, Task
from executions.services import execution_create
from tests.fakes.slack_server import (
    app_mention_body,
    block_action_body,
    signed_headers,
    slash_command_body,
)
from tests.slack import (
    FORM,
    OTHER_TEAM,
    PUBLIC_URL,
    SECRET,
    TEAM,
    USER,
    post,
    queued,
)


@pytest.fixture
def clock(monkeypatch):
    """The rate limits' clock, held at a window's first second (so no test's minute ends early)."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(throttling, "clock", lambda: now[0])
    return now


@pytest.fixture
def slack_log(caplog):
    # The "openclaw" loggers do not propagate to the root logger that caplog listens on.
    logger = logging.getLogger("openclaw.slack")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="openclaw.slack")
    yield caplog
    logger.removeHandler(caplog.handler)


def slack_execution(client: Client, **thread_fields) -> tuple[Execution, SlackThread]:
    # In one transaction, as a Slack request creates them: no event is published before the thread exists.
    with transaction.atomic():
        execution = execution_create(
            client=client, message="Build a restaurant website", session_key=f"slack-{TEAM}-{USER}"
        )
        thread = SlackThread.objects.create(
            execution=execution, team_id=TEAM, user_id=USER, channel_id="C0PROJECTS", **thread_fields
        )
    return execution, thread


# -- the endpoint and its security ---------------------------------------------------------------


def test_endpoint_without_slack_configuration_answers_503(client, settings, db):
    settings.SLACK_BOT_TOKEN = ""
    response = client.post("/slack/events", data="x=1", content_type=FORM)
    assert response.status_code == 503
    assert "SLACK_BOT_TOKEN" in response.json()["detail"]


def test_bad_and_stale_signatures_are_rejected(client, slack_settings, acme, redis_server):
    body = slash_command_body("Build a blog", team_id=TEAM, user_id=USER)
    assert post(client, body, secret="not-the-secret").status_code == 401
    stale = time.time() - 6 * 60  # outside Slack's 5-minute window, correctly signed
    assert post(client, body, timestamp=stale).status_code == 401
    tampered = client.post(
        "/slack/events", data=body.replace("blog", "bank"), content_type=FORM, **signed_headers(SECRET, body)
    )
    assert tampered.status_code == 401
    assert not SlackEventReceipt.objects.exists() and not queued(redis_server, "control")
    assert post(client, body).status_code == 200  # the same request, properly signed and fresh


def test_url_verification_challenge_is_answered(client, slack_settings, db):
    body = json.dumps(
        {
            "token": "legacy",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    response = post(client, body, content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


# -- starting work ---------------------------------------------------------------------------------


def test_slash_command_acks_fast_and_starts_one_execution(client, slack_settings, acme, redis_server):
    body = slash_command_body("Build a restaurant website with online booking", team_id=TEAM, user_id=USER)
    started = time.monotonic()
    response = post(client, body)
    assert time.monotonic() - started < 3
    assert response.status_code == 200
    assert response.json()["text"].startswith("On it: planning")
    assert not Execution.objects.exists()  # the listener only enqueues
    [message] = queued(redis_server, "control")
    assert message.actor_name == "start_slack_request"

    start_slack_request.fn(*message.args, **message.kwargs)
    start_slack_request.fn(*message.args, **message.kwargs)  # a redelivered message starts nothing twice
    execution = Execution.objects.get()
    assert execution.client == acme
    assert execution.session_key == f"slack-{TEAM}-{USER}"
    assert execution.message == "Build a restaurant website with online booking"
    thread = execution.slack_thread
    assert (thread.team_id, thread.user_id, thread.channel_id, thread.thread_ts) == (
        TEAM,
        USER,
        "C0PROJECTS",
        "",
    )
    assert SlackEventReceipt.objects.get().execution == execution

    # The same invocation delivered again (same trigger_id) is acknowledged and ignored.
    assert post(client, body).status_code == 200
    assert len(queued(redis_server, "control")) == 1


def test_unlinked_workspace_gets_a_polite_refusal(client, slack_settings, acme, redis_server):
    response = post(client, slash_command_body("Build a blog", team_id=OTHER_TEAM, user_id="U0BOB"))
    assert response.status_code == 200
    assert "isn't linked" in response.json()["text"]
    assert not SlackEventReceipt.objects.exists() and not queued(redis_server, "control")

    mention = post(
        client,
        app_mention_body("build a blog", team_id=OTHER_TEAM, user_id="U0BOB"),
        content_type="application/json",
    )
    assert mention.status_code == 200
    assert not queued(redis_server, "control")
    [notice] = queued(redis_server, "slack")
    assert notice.actor_name == "post_slack_notice" and "isn't linked" in notice.args[1]
    assert notice.args[3] == "U0BOB"  # ephemeral: only the asker sees it


def test_retried_event_delivery_is_deduplicated(client, slack_settings, acme, redis_server):
    body = app_mention_body(
        "build an online shop", team_id=TEAM, user_id=USER, event_id="Ev0RETRY01", ts="1700000000.000100"
    )
    assert post(client, body, content_type="application/json").status_code == 200
    retried = post(
        client,
        body,
        content_type="application/json",
        HTTP_X_SLACK_RETRY_NUM="1",
        HTTP_X_SLACK_RETRY_REASON="http_timeout",
    )
    assert retried.status_code == 200
    [message] = queued(redis_server, "control")
    assert SlackEventReceipt.objects.get().key == "event:Ev0RETRY01"

    start_slack_request.fn(*message.args, **message.kwargs)
    execution = Execution.objects.get()
    assert execution.message == "build an online shop"  # the bot's own mention is not part of the request
    assert execution.slack_thread.thread_ts == "1700000000.000100"  # follows up in the mention's thread


def test_status_and_list_answer_from_the_database(client, slack_settings, acme, redis_server):
    mine = execution_create(client=acme, message="Build a booking system", session_key="s1")
    other = execution_create(
        client=Client.objects.create(name="globex"), message="Secret project", session_key="s2"
    )

    listing = post(client, slash_command_body("list", team_id=TEAM, user_id=USER)).json()
    assert mine.pk in listing["text"] and other.pk not in listing["text"]

    status = post(client, slash_command_body(f"status {mine.pk}", team_id=TEAM, user_id=USER)).json()["text"]
    assert "*planning*" in status and f"{PUBLIC_URL}/console/executions/{mine.pk}/" in status

    hidden = post(client, slash_command_body(f"status {other.pk}", team_id=TEAM, user_id=USER)).json()["text"]
    assert "can't find" in hidden and "Secret" not in hidden
    assert not queued(redis_server, "control") and not SlackEventReceipt.objects.exists()


# -- buttons ---------------------------------------------------------------------------------------


def test_cancel_button_rechecks_the_clicking_user(client, slack_settings, acme, redis_server):
    execution, _ = slack_execution(acme)
    stranger = block_action_body(render.CANCEL_ACTION, execution.pk, team_id=OTHER_TEAM, user_id="U0BOB")
    assert post(client, stranger).status_code == 200
    assert Execution.objects.get(pk=execution.pk).status == "planning"
    [notice] = queued(redis_server, "slack")
    assert (
        notice.args[1]
        == "Sorry, you can't act on that execution: it belongs to an account you aren't linked to."
    )
    assert notice.args[3] == "U0BOB"  # ephemeral, to the clicking user only

    SlackUserMapping.objects.create(team_id=TEAM, user_id="U0MALLORY", allowed=False)
    post(client, block_action_body(render.CANCEL_ACTION, execution.pk, team_id=TEAM, user_id="U0MALLORY"))
    assert Execution.objects.get(pk=execution.pk).status == "planning"

    assert (
        post(
            client, block_action_body(render.CANCEL_ACTION, execution.pk, team_id=TEAM, user_id=USER)
        ).status_code
        == 200
    )
    cancelled = Execution.objects.get(pk=execution.pk)
    assert cancelled.status == "cancelled"
    assert cancelled.final_response == f"Cancelled by <@{USER}> in Slack."


def test_retry_button_reopens_dead_tasks(client, slack_settings, acme):
    execution, _ = slack_execution(acme)
    Execution.objects.filter(pk=execution.pk).update(status="partial", finished_at=timezone.now())
    Task.objects.create(
        execution=execution, key="task_1", pool="codegen", description="Build it", status="succeeded"
    )
    Task.objects.create(
        execution=execution,
        key="task_2",
        pool="security",
        description="Audit it",
        status="dead",
        failed_attempts=3,
        error="timeout",
    )
    assert (
        post(
            client, block_action_body(render.RETRY_ACTION, execution.pk, team_id=OTHER_TEAM, user_id="U0BOB")
        ).status_code
        == 200
    )
    assert Execution.objects.get(pk=execution.pk).status == "partial"

    post(client, block_action_body(render.RETRY_ACTION, execution.pk, team_id=TEAM, user_id=USER))
    assert Execution.objects.get(pk=execution.pk).status == "executing"
    assert Task.objects.get(key="task_2").status == "ready"


def test_console_link_button_is_acknowledged(client, slack_settings, acme):
    execution, _ = slack_execution(acme)
    response = post(
        client, block_action_body(render.CONSOLE_ACTION, execution.pk, team_id=TEAM, user_id=USER)
    )
    assert response.status_code == 200
    assert Execution.objects.get(pk=execution.pk).status == "planning"


# -- who may act -----------------------------------------------------------------------------------


def test_user_mappings_restrict_and_redirect_billing(acme):
    globex = Client.objects.create(name="globex")
    assert client_for_slack_user(team_id=TEAM, user_id=USER) == acme  # mapped by link_slack --user
    assert client_for_slack_user(team_id=TEAM, user_id="U0BOB") is None  # a member, not mapped
    assert client_for_slack_user(team_id=OTHER_TEAM, user_id=USER) is None

    SlackUserMapping.objects.create(team_id=TEAM, user_id="U0CONTRACTOR", client=globex)
    assert client_for_slack_user(team_id=TEAM, user_id="U0CONTRACTOR") == globex

    SlackWorkspace.objects.filter(team_id=TEAM).update(restrict_to_mapped_users=False)
    assert client_for_slack_user(team_id=TEAM, user_id="U0BOB") == acme
    # A Slack Connect guest from another organisation is no member of the linked workspace.
    assert client_for_slack_user(team_id=TEAM, user_id="U0GUEST", user_team=OTHER_TEAM) is None
    SlackUserMapping.objects.create(team_id=TEAM, user_id="U0GUEST")
    assert client_for_slack_user(team_id=TEAM, user_id="U0GUEST", user_team=OTHER_TEAM) == acme

    execution = execution_create(client=acme, message="x", session_key="s")
    assert slack_user_may_act(team_id=TEAM, user_id=USER, execution=execution)
    assert not slack_user_may_act(team_id=TEAM, user_id="U0BOB", execution=execution)  # not the requester
    assert not slack_user_may_act(team_id=TEAM, user_id="U0CONTRACTOR", execution=execution)
    Client.objects.filter(pk=acme.pk).update(is_active=False)
    assert not slack_user_may_act(team_id=TEAM, user_id=USER, execution=execution)


def test_link_slack_command(db):
    with pytest.raises(CommandError, match="No client named 'nobody'"):
        call_command("link_slack", TEAM, "nobody")
    first, second = Client.objects.create(name="first"), Client.objects.create(name="second")
    call_command("link_slack", TEAM, "first")
    workspace = SlackWorkspace.objects.get(team_id=TEAM)
    assert workspace.client == first and workspace.restrict_to_mapped_users  # closed unless opened
    assert not SlackUserMapping.objects.exists()

    call_command("link_slack", TEAM, "second", "--user", "U0ALICE", "--user", "U0BOB")
    workspace = SlackWorkspace.objects.get(team_id=TEAM)
    assert workspace.client == second and workspace.restrict_to_mapped_users
    assert set(SlackUserMapping.objects.values_list("team_id", "user_id", "allowed")) == {
        (TEAM, "U0ALICE", True),
        (TEAM, "U0BOB", True),
    }
    call_command("link_slack", TEAM, "second", "--any-member")
    assert not SlackWorkspace.objects.get(team_id=TEAM).restrict_to_mapped_users
    call_command("link_slack", TEAM, "second")  # re-linking without --any-member closes it again
    assert SlackWorkspace.objects.get(team_id=TEAM).restrict_to_mapped_users


def test_a_workspace_is_restricted_to_mapped_users_by_default(db):
    workspace = SlackWorkspace.objects.create(team_id=TEAM, client=Client.objects.create(name="acme"))
    assert workspace.restrict_to_mapped_users
    assert client_for_slack_user(team_id=TEAM, user_id="U0ANYONE") is None


def test_an_unmapped_member_is_refused_and_nothing_is_stored(client, slack_settings, acme, redis_server):
    answer = post(client, slash_command_body("Build a blog", team_id=TEAM, user_id="U0BOB")).json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == (
        "Sorry, you aren't enabled to use OpenClaw in this workspace, so I can't start or show projects "
        f"for you. An administrator can enable you with `python manage.py link_slack {TEAM} <client name> "
        "--user U0BOB`."
    )
    listing = post(client, slash_command_body("list", team_id=TEAM, user_id="U0BOB")).json()
    assert "aren't enabled" in listing["text"]

    mention = app_mention_body("build a blog", team_id=TEAM, user_id="U0BOB")
    assert post(client, mention, content_type="application/json").status_code == 200
    [notice] = queued(redis_server, "slack")
    assert "aren't enabled" in notice.args[1] and notice.args[3] == "U0BOB"  # ephemeral
    assert not queued(redis_server, "control")
    assert not SlackEventReceipt.objects.exists() and not Execution.objects.exists()


def test_a_slack_connect_guest_is_refused_unless_mapped(client, slack_settings, acme, redis_server):
    call_command("link_slack", TEAM, "acme", "--any-member")

    def guest_mention(text: str) -> str:
        body = json.loads(app_mention_body(text, team_id=TEAM, user_id="U0GUEST"))
        body["event"]["user_team"] = OTHER_TEAM  # posted in a channel shared with another organisation
        body["event"]["source_team"] = OTHER_TEAM
        return json.dumps(body)

    post(client, guest_mention("build a bank"), content_type="application/json")
    [notice] = queued(redis_server, "slack")
    assert "aren't enabled" in notice.args[1]
    assert not queued(redis_server, "control") and not SlackEventReceipt.objects.exists()

    call_command("link_slack", TEAM, "acme", "--any-member", "--user", "U0GUEST")
    post(client, guest_mention("build a bank"), content_type="application/json")
    [message] = queued(redis_server, "control")
    assert message.actor_name == "start_slack_request"


def test_buttons_act_only_for_the_requester_or_mapped_users(client, slack_settings, acme, redis_server):
    call_command("link_slack", TEAM, "acme", "--any-member")  # every member may start executions
    with transaction.atomic():
        execution = execution_create(client=acme, message="Build a blog", session_key="s")
        SlackThread.objects.create(
            execution=execution, team_id=TEAM, user_id="U0BOB", channel_id="C0PROJECTS"
        )

    post(client, block_action_body(render.CANCEL_ACTION, execution.pk, team_id=TEAM, user_id="U0CAROL"))
    assert (
        Execution.objects.get(pk=execution.pk).status == "planning"
    )  # a member, neither requester nor mapped
    [notice] = queued(redis_server, "slack")
    assert notice.args[3] == "U0CAROL"

    post(client, block_action_body(render.CANCEL_ACTION, execution.pk, team_id=TEAM, user_id="U0BOB"))
    assert Execution.objects.get(pk=execution.pk).status == "cancelled"  # the requester

    other = execution_create(client=acme, message="Build a shop", session_key="s2")
    SlackThread.objects.create(execution=other, team_id=TEAM, user_id="U0BOB", channel_id="C0PROJECTS")
    post(client, block_action_body(render.CANCEL_ACTION, other.pk, team_id=TEAM, user_id=USER))
    assert Execution.objects.get(pk=other.pk).status == "cancelled"  # a mapped user


def test_starting_executions_is_rate_limited_per_user(
    client, slack_settings, acme, redis_server, clock, settings
):
    settings.OPENCLAW_SLACK_REQUESTS_PER_MINUTE = 2
    answers = [
        post(client, slash_command_body(f"Build blog {i}", team_id=TEAM, user_id=USER)).json()["text"]
        for i in range(3)
    ]
    assert [a.startswith("On it: planning") for a in answers] == [True, True, False]
    clock[0] += 20
    slowed = post(client, slash_command_body("Build blog 4", team_id=TEAM, user_id=USER)).json()
    assert slowed["response_type"] == "ephemeral"
    assert slowed["text"] == (
        "You're starting projects quickly (at most 2 a minute). "
        "Please wait 40 seconds and send that request again."
    )
    assert len(queued(redis_server, "control")) == 2 and SlackEventReceipt.objects.count() == 2

    mention = app_mention_body("build blog 5", team_id=TEAM, user_id=USER)
    post(client, mention, content_type="application/json")
    [notice] = queued(redis_server, "slack")
    assert notice.args[1].startswith("You're starting projects quickly") and notice.args[3] == USER

    # Status and list still answer, and other users are not slowed by Alice.
    assert (
        "Build blog"
        not in post(client, slash_command_body("list", team_id=TEAM, user_id=USER)).json()["text"]
    )
    SlackUserMapping.objects.create(team_id=TEAM, user_id="U0BOB")
    answer = post(client, slash_command_body("Build a shop", team_id=TEAM, user_id="U0BOB")).json()["text"]
    assert answer.startswith("On it: planning")

    clock[0] += 40  # the next minute
    answer = post(client, slash_command_body("Build blog 6", team_id=TEAM, user_id=USER)).json()["text"]
    assert answer.startswith("On it: planning")


def test_an_over_long_request_is_refused_before_anything_is_stored(
    client, slack_settings, acme, redis_server
):
    limit = django_settings.OPENCLAW_MAX_MESSAGE_CHARS
    too_long = "Build " + "x" * (40_000 - 6)  # Slack sends up to about 40,000 characters
    answer = post(client, slash_command_body(too_long, team_id=TEAM, user_id=USER)).json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == (
        f"Sorry, that request is 40,000 characters long and OpenClaw accepts at most {limit:,}. "
        "Please shorten it and send it again."
    )
    post(client, app_mention_body(too_long, team_id=TEAM, user_id=USER), content_type="application/json")
    [notice] = queued(redis_server, "slack")
    assert f"at most {limit:,}" in notice.args[1] and notice.args[3] == USER
    assert not queued(redis_server, "control")
    assert not SlackEventReceipt.objects.exists() and not Execution.objects.exists()

    just_fits = "Build " + "x" * (limit - 6)
    assert (
        post(client, slash_command_body(just_fits, team_id=TEAM, user_id=USER))
        .json()["text"]
        .startswith("On it")
    )


def test_a_queued_over_long_request_starts_nothing(acme):
    from bots.services import slack_delivery_claim

    receipt = slack_delivery_claim(key="trigger:1", team_id=TEAM)
    start_slack_request.fn(
        receipt.pk, TEAM, USER, "C0PROJECTS", "x" * (django_settings.OPENCLAW_MAX_MESSAGE_CHARS + 1)
    )
    assert not Execution.objects.exists() and not SlackThread.objects.exists()


def test_a_request_the_engine_refuses_is_answered_to_its_author_and_stores_nothing(acme, redis_server):
    from bots.services import slack_delivery_claim

    receipt = slack_delivery_claim(key="trigger:2", team_id=TEAM)
    start_slack_request.fn(receipt.pk, TEAM, USER, "C0PROJECTS", "Build a shop\x00", "171.5")
    assert not Execution.objects.exists() and not SlackThread.objects.exists()
    [notice] = queued(redis_server, "slack")
    assert notice.args == (
        "C0PROJECTS",
        "Sorry, that request was not started: the request contains a NUL character (U+0000).",
        "171.5",
        USER,
    )


# -- the thread ------------------------------------------------------------------------------------


def finished_partial_execution(client: Client) -> tuple[Execution, SlackThread]:
    """A partial delivery with a dead task and a resolved conflict, as the engine leaves it."""
    execution, thread = slack_execution(client)
    start = timezone.now() - timedelta(seconds=20)
    Task.objects.create(
        execution=execution,
        key="task_1",
        pool="codegen",
        description="Build backend",
        status="succeeded",
        started_at=start,
        finished_at=start + timedelta(seconds=8),
        cost_usd=Decimal("0.0123"),
        weight=90,
    )
    Task.objects.create(
        execution=execution,
        key="task_2",
        pool="security",
        description="Audit payments",
        status="dead",
        failed_attempts=3,
        error="timeout after 300s",
        weight=120,
        started_at=start,
        finished_at=start + timedelta(seconds=10),
    )
    Conflict.objects.create(
        execution=execution,
        kind="security_finding",
        between=["task_1", "task_3"],
        description="No CSRF protection on the booking form",
        status="resolved",
        resolution="CSRF middleware added to the backend",
        created_at=start + timedelta(seconds=11),
        resolved_at=start + timedelta(seconds=14),
    )
    Execution.objects.filter(pk=execution.pk).update(
        status="partial",
        mode="parallel",
        created_at=start,
        started_at=start,
        finished_at=start + timedelta(seconds=16),
        serial_estimate_sec=40,
        cost_usd=Decimal("0.0456"),
        fee_usd=Decimal("3.20"),
        refund_usd=Decimal("1.65"),
        final_response="## Partial delivery\n\n**Backend** delivered; see [docs](https://example.com/docs).",
    )
    return Execution.objects.get(pk=execution.pk), thread


def test_a_summary_calls_only_a_delivery_faster(slack_settings, acme):
    execution, _ = finished_partial_execution(acme)
    assert "(60% faster)" in render.summary_message(execution, public_url=PUBLIC_URL).text

    execution.status = "cancelled"
    summary = render.summary_message(execution, public_url=PUBLIC_URL).text
    assert "*Timeline:* 16s wall clock in parallel mode vs 40s serial estimate\n" in summary
    assert "faster" not in summary

    execution.status, execution.mode = "completed", "serial"  # beating its own estimate is no speed-up
    summary = render.summary_message(execution, public_url=PUBLIC_URL).text
    assert "*Timeline:* 16s wall clock in serial mode (estimated 40s)\n" in summary
    assert "faster" not in summary

    execution.status, execution.mode, execution.serial_estimate_sec = "cancelled", "parallel", None
    summary = render.summary_message(execution, public_url=PUBLIC_URL).text  # cancelled before a plan
    assert "*Timeline:* 16s wall clock in parallel mode\n" in summary


def test_a_summary_states_the_bill_once(slack_settings, acme):
    execution, _ = finished_partial_execution(acme)
    execution.final_response += "\n\n**Cost:** $0.05 in model usage; project fee $3.20\n**Refund:** $1.65"

    summary = render.summary_message(execution, public_url=PUBLIC_URL).text

    assert summary.count("Cost:") == 1 and "*Cost:* $0.05 in model usage; project fee $3.20" in summary
    # A model that states a cost of its own does not replace the bill.
    execution.final_response = "**Cost:** about a dollar, I think."
    assert (
        "*Cost:* $0.05 model usage · fee $3.20 · refund $1.65"
        in render.summary_message(execution, public_url=PUBLIC_URL).text
    )


def test_a_summary_repeats_nothing_of_the_answers_record(slack_settings, acme):
    execution, _ = finished_partial_execution(acme)
    execution.final_response += (
        "\n\n**Timeline:** 16s wall clock in parallel mode vs 40s serial estimate (60% faster)"
        "\n**Integration:** Integration gate passed\n**Status:** partial"
        "\n\n**Cost:** $0.05 in model usage; project fee $3.20\n**Refund:** $1.65"
    )

    summary = render.summary_message(execution, public_url=PUBLIC_URL).text

    for line in ("Timeline:", "Integration:", "Cost:", "Status:"):
        assert summary.count(line) == 1, line
    assert "*Timeline:* 16s wall clock in parallel mode" in summary and "Open in console" in summary


def test_thread_posts_status_milestones_and_summary_in_order(slack_settings, fake_slack, acme):
    execution, thread = finished_partial_execution(acme)
    thread_sync(thread)
    [status, *replies] = fake_slack.channel_messages("C0PROJECTS")
    assert status.thread_ts is None  # a slash command's thread starts with our status message
    assert all(reply.thread_ts == status.ts for reply in replies)
    assert [r.text.split(" ", 1)[0] for r in replies] == [
        ":x:",
        ":mag:",
        ":white_check_mark:",
        ":large_orange_diamond:",
        ":large_orange_diamond:",
    ]
    assert "`task_2` (security) failed for good after 3 attempts: timeout after 300s" in replies[0].text
    assert "Conflict detected (security_finding) between `task_1`, `task_3`" in replies[1].text
    assert "CSRF middleware added" in replies[2].text
    assert "Partial delivery: 1 of 2 tasks delivered" in replies[3].text and "Refund $1.65" in replies[3].text
    summary = replies[4].text
    assert "*Partial delivery* — `" + execution.pk + "`" in summary
    assert "*Backend* delivered; see <https://example.com/docs|docs>" in summary
    assert "*Timeline:* 16s wall clock in parallel mode vs 40s serial estimate (60% faster)" in summary
    assert "*Cost:* $0.05 model usage · fee $3.20 · refund $1.65" in summary
    assert f"<{PUBLIC_URL}/console/executions/{execution.pk}/|Open in console>" in summary

    blocks = json.dumps(status.blocks)
    assert "*partial*" in blocks and "Took 16s" in blocks and "cost so far $0.0456" in blocks
    buttons = [e["action_id"] for e in status.blocks[-1]["elements"]]
    assert buttons == [render.RETRY_ACTION, render.CONSOLE_ACTION]

    thread.refresh_from_db()
    thread_sync(thread)  # nothing changed: nothing posted, nothing edited
    assert len(fake_slack.channel_messages("C0PROJECTS")) == 6
    assert not fake_slack.calls_of("chat.update")


def test_status_message_is_edited_in_place_as_the_state_changes(slack_settings, fake_slack, acme):
    execution, thread = slack_execution(acme, thread_ts="1700000000.000100")  # an @mention's thread
    thread_sync(thread)
    [status] = fake_slack.channel_messages("C0PROJECTS")
    assert status.thread_ts == "1700000000.000100"
    assert [e["action_id"] for e in status.blocks[-1]["elements"]] == [
        render.CANCEL_ACTION,
        render.CONSOLE_ACTION,
    ]

    Task.objects.create(
        execution=execution,
        key="task_1",
        pool="codegen",
        description="Build frontend",
        status="running",
        started_at=timezone.now(),
    )
    Execution.objects.filter(pk=execution.pk).update(status="executing", mode="parallel")
    thread.refresh_from_db()
    thread_sync(thread)
    [status] = fake_slack.channel_messages("C0PROJECTS")
    assert len(status.updates) == 1
    assert "*executing*" in status.blocks[0]["text"]["text"]
    assert "`task_1` codegen — Build frontend · *running*" in status.blocks[2]["text"]["text"]


def test_events_enqueue_one_coalesced_sync_per_thread(slack_settings, acme, redis_server):
    execution, thread = slack_execution(acme)
    unrelated = execution_create(client=acme, message="from the API", session_key="api")
    for seq in range(5):
        on_execution_event({"execution_id": execution.pk, "seq": seq, "type": "task.started"})
    on_execution_event({"execution_id": unrelated.pk, "seq": 1, "type": "task.started"})
    [message] = queued(redis_server, "slack")
    assert (message.actor_name, list(message.args)) == ("sync_slack_thread", [thread.pk])


def test_the_thread_of_an_execution_is_looked_up_once_per_process(
    slack_settings, acme, redis_server, django_assert_num_queries
):
    execution, thread = slack_execution(acme)
    unrelated = execution_create(client=acme, message="from the API", session_key="api")
    on_execution_event({"execution_id": execution.pk, "seq": 1, "type": "task.started"})
    on_execution_event({"execution_id": unrelated.pk, "seq": 1, "type": "task.started"})
    with django_assert_num_queries(0):  # every transition publishes events: no query per event
        for seq in range(2, 6):
            on_execution_event({"execution_id": execution.pk, "seq": seq, "type": "task.started"})
            on_execution_event({"execution_id": unrelated.pk, "seq": seq, "type": "task.started"})
    [message] = queued(redis_server, "slack")
    assert list(message.args) == [thread.pk]


def test_status_edits_are_throttled(slack_settings, fake_slack, acme, redis_server):
    execution, thread = slack_execution(acme)
    thread_sync_run(thread.pk)
    Execution.objects.filter(pk=execution.pk).update(status="executing")
    thread_sync_run(thread.pk)  # within a second of the last edit: deferred, not sent
    assert not fake_slack.calls_of("chat.update")
    [deferred] = queued(redis_server, "slack.DQ")
    assert list(deferred.args) == [thread.pk]
    assert 0 < deferred.options["eta"] - time.time() * 1000 <= 1000


def test_slack_errors_are_retried_with_backoff_then_dropped_quietly(
    slack_settings, fake_slack, acme, redis_server, slack_log
):
    _, thread = slack_execution(acme)
    fake_slack.fail("chat.postMessage", status=429, retry_after=7)
    thread_sync_run(thread.pk)
    [retry] = queued(redis_server, "slack.DQ")
    assert 6000 < retry.options["eta"] - time.time() * 1000 <= 7000  # honours Retry-After
    redis_server.delete("openclaw:slack.DQ.msgs", "openclaw:slack.DQ")
    thread_sync_run(thread.pk)  # a sync that an event asked for waits out the workspace's backoff too
    assert not fake_slack.calls_of("chat.postMessage", ok=True)
    [deferred] = queued(redis_server, "slack.DQ")
    assert 5000 < deferred.options["eta"] - time.time() * 1000 <= 7000

    redis_server.flushdb()  # drops the queued retry and the workspace backoff (both live in Redis)
    fake_slack.fail("*", status=500, times=None)
    for attempt in (2, 3):
        redis_server.flushdb()
        thread_sync_run(thread.pk)
        assert len(queued(redis_server, "slack.DQ")) == 1
        assert SlackThread.objects.get(pk=thread.pk).failures == attempt
    assert (
        len(fake_slack.calls_of("chat.postMessage", ok=False)) == 1 + 2 * 2
    )  # slack_sdk retries a 500 once itself

    redis_server.flushdb()
    thread_sync_run(thread.pk)
    assert not queued(redis_server, "slack.DQ") and not queued(redis_server, "slack")
    assert "giving up after 4 attempt(s): HTTP 500" in slack_log.text
    assert SlackThread.objects.get(pk=thread.pk).sync_lease_until is None

    fake_slack.recover()
    thread_sync_run(thread.pk)  # the next event's sync finds Slack back
    thread.refresh_from_db()
    assert thread.failures == 0 and thread.status_ts

    fake_slack.missing_channels.add("C0PROJECTS")
    Execution.objects.filter(pk=thread.execution_id).update(status="executing")
    SlackThread.objects.filter(pk=thread.pk).update(synced_at=None)
    thread_sync_run(thread.pk)  # not retryable: the channel is gone
    assert not queued(redis_server, "slack.DQ")
    assert "giving up after 1 attempt(s): HTTP 200 channel_not_found" in slack_log.text


def test_markdown_becomes_slack_mrkdwn():
    text = "# Title\n**bold** and __it__\n- item\n[link](https://x.example/a)"
    assert render.markdown_to_mrkdwn(text) == "*Title*\n*bold* and _it_\n• item\n<https://x.example/a|link>"
