"""The Slack bot end to end: signed requests in, real workers, the fake Slack Web API out.

The worker processes get SLACK_* pointing at the fake server, so the `slack` queue's notifier
talks to it over HTTP exactly as it would talk to slack.com.
"""

import json
import re
import time

import pytest
from django.core.management import call_command

from bots.models import SlackThread
from bots.notifier import CLOCK_SLACK_SEC
from executions.models import Client, Execution
from tests.conftest import Workers, configure, wait_for_status
from tests.fakes.slack_server import FakeSlackServer, signed_headers, slash_command_body

TOKEN = "xoxb-test-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0LINKED"
USER = "U0ALICE"
CHANNEL = "C0PROJECTS"
PUBLIC_URL = "https://openclaw.example"
# Half of production's one second, so a two-second execution still shows several throttled edits.
MIN_UPDATE_INTERVAL = 0.5
REQUEST = "Build a restaurant website with online booking and secure payments"


@pytest.fixture
def fake_slack():
    with FakeSlackServer(token=TOKEN, team_id=TEAM) as server:
        yield server


@pytest.fixture
def slack_workers(transactional_db, redis_server, settings, fake_slack):
    slack_env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.url,
        "OPENCLAW_PUBLIC_URL": PUBLIC_URL,
        "SLACK_MIN_UPDATE_INTERVAL_SEC": str(MIN_UPDATE_INTERVAL),
    }
    for name, value in slack_env.items():
        setattr(settings, name, value)
    settings.SLACK_MIN_UPDATE_INTERVAL_SEC = MIN_UPDATE_INTERVAL
    running = Workers(env=slack_env).start()
    yield running
    running.stop()


@pytest.fixture
def acme(transactional_db):
    client = Client.objects.create(name="acme")
    call_command("link_slack", TEAM, "acme", "--user", USER)
    return client


def request_from_slack(client, *, after: SlackThread | None = None) -> tuple[Execution, SlackThread]:
    """Post `/openclaw <REQUEST>` and wait for the control queue to start it (a thread newer than `after`)."""
    body = slash_command_body(REQUEST, team_id=TEAM, user_id=USER, channel_id=CHANNEL)
    response = client.post(
        "/slack/events",
        data=body,
        content_type="application/x-www-form-urlencoded",
        **signed_headers(SECRET, body),
    )
    assert response.status_code == 200
    newer = SlackThread.objects.filter(pk__gt=after.pk if after else 0)
    deadline = time.monotonic() + 10
    while not newer.exists():
        assert time.monotonic() < deadline, "the control queue did not start the execution"
        time.sleep(0.05)
    thread = newer.select_related("execution").get()
    return thread.execution, thread


def summary_posted(fake_slack, execution: Execution | None = None):
    """The channel's messages (one execution's, if given) once the last one is a final summary."""
    messages = fake_slack.channel_messages(CHANNEL)
    if execution is not None:
        parents = [m.ts for m in messages if m.thread_ts is None and execution.pk in m.text]
        messages = [m for m in messages if parents and parents[0] in (m.ts, m.thread_ts)]
    return messages if messages and "Open in console>" in messages[-1].text else None


def status_text(message) -> str:
    return json.dumps(message.blocks)


def test_slash_command_is_followed_in_its_thread_to_the_final_summary(
    slack_workers, acme, client, fake_slack
):
    configure(latency=0.3)
    execution, thread = request_from_slack(client)
    assert execution.client == acme and execution.session_key == f"slack-{TEAM}-{USER}"
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=40)
    assert done.status == "completed"

    [status, *replies] = fake_slack.wait_for(lambda: summary_posted(fake_slack), timeout=15)
    # One status message starts the thread; everything else is a reply in it, the summary last.
    assert status.thread_ts is None and all(r.thread_ts == status.ts for r in replies)
    summary = replies[-1].text
    assert summary.startswith(f":white_check_mark: *Project complete* — `{execution.pk}`")
    # The answer's record, once: the timeline as settled, the project's clone.
    assert re.search(r"\*Timeline:\* \d+s wall clock in parallel mode vs \d+s serial estimate", summary)
    assert summary.count("Timeline:") == summary.count("git clone") == 1
    # The bill once: the answer's own, from the ledger.
    assert f"*Cost:* ${done.cost_usd:.2f} in model usage; project fee ${done.fee_usd:.2f}" in summary
    assert summary.count("Cost:") == 1
    assert f"<{PUBLIC_URL}/console/executions/{execution.pk}/|Open in console>" in summary

    # The status message was posted early, edited in place (never faster than the throttle allows)
    # and its last edit, made before the summary went out, shows the final state.
    assert "*completed*" not in json.dumps(status.updates[0]["blocks"])
    updates = fake_slack.calls_of("chat.update", ok=True)
    assert updates and all(u.params["ts"] == status.ts for u in updates)
    gaps = [later.at - earlier.at for earlier, later in zip(updates, updates[1:])]
    # The notifier lets a sync through up to CLOCK_SLACK_SEC before the interval ends (a delayed
    # message may run that early by our clock), so that is the tolerance here too.
    assert all(gap >= MIN_UPDATE_INTERVAL - CLOCK_SLACK_SEC for gap in gaps), gaps
    summary_call = [c for c in fake_slack.calls_of("chat.postMessage") if c.params["text"] == summary][0]
    assert updates[-1].at < summary_call.at
    final = status_text(status)
    assert "*completed*" in final and f"{done.tasks.count()}/{done.tasks.count()} tasks done" in final
    assert final.count(":white_check_mark: `task_") == done.tasks.count()
    assert "openclaw_cancel" not in final and "Open in console" in final


# "On time" leaves room for a loaded machine, yet less than the 2 × Retry-After an execution that
# waited on Slack would lose.
ON_TIME_MARGIN_SEC = 5
RETRY_AFTER_SEC = 5


def test_slack_outage_never_slows_the_execution(slack_workers, acme, client, fake_slack):
    configure(latency=0.3)
    log_file = slack_workers.logs / "workers.log"

    # Posting fails (500 twice: slack_sdk retries once itself, then the notifier backs off).
    fake_slack.fail("chat.postMessage", status=500, times=2)
    first, thread = request_from_slack(client)
    done = wait_for_status(first.pk, {"completed", "partial", "failed"}, timeout=40)
    assert (
        done.status == "completed" and done.duration_sec <= done.estimated_duration_sec + ON_TIME_MARGIN_SEC
    )
    [status, *_] = fake_slack.wait_for(lambda: summary_posted(fake_slack, first), timeout=20)
    assert "*completed*" in status_text(status)  # caught up, and ended on the final state
    assert [c.status for c in fake_slack.calls_of("chat.postMessage", ok=False)] == [500, 500]

    # Edits are rate-limited with Retry-After: every sync of the workspace waits it out.
    fake_slack.fail("chat.update", status=429, retry_after=RETRY_AFTER_SEC, times=2)
    second, thread = request_from_slack(client, after=thread)
    done = wait_for_status(second.pk, {"completed", "partial", "failed"}, timeout=40)
    assert (
        done.status == "completed" and done.duration_sec <= done.estimated_duration_sec + ON_TIME_MARGIN_SEC
    )
    [status, *_] = fake_slack.wait_for(lambda: summary_posted(fake_slack, second), timeout=20)
    assert "*completed*" in status_text(status)
    edits = [c for c in fake_slack.calls_of("chat.update") if c.params["ts"] == status.ts]
    assert [c.status for c in edits[:3]] == [429, 429, 200]
    assert all(
        later.at - earlier.at >= RETRY_AFTER_SEC for earlier, later in zip(edits, edits[1:3])
    )  # honoured

    # A Slack that stays down: the execution completes just as fast; the notifier gives up quietly.
    fake_slack.fail("chat.postMessage", status=500, times=None)
    fake_slack.fail("chat.update", status=500, times=None)
    third, thread = request_from_slack(client, after=thread)
    done = wait_for_status(third.pk, {"completed", "partial", "failed"}, timeout=40)
    assert (
        done.status == "completed" and done.duration_sec <= done.estimated_duration_sec + ON_TIME_MARGIN_SEC
    )
    fake_slack.wait_for(
        lambda: f"({third.pk}): giving up after 4 attempt(s): HTTP 500" in log_file.read_text(), timeout=30
    )
