"""Slack actors: starting a request (control queue) and notifications (their own `slack` queue);
workers consume the `slack` queue because these actors declare it at import. Sent by name from
`bots/messages.py`.
"""

import dramatiq

from executions.actors import CONTROL_OPTIONS
from executions.services import RequestRefused

from . import messages
from .notifier import request_thread_sync, slack_notice_post, thread_sync_run
from .services import slack_request_start

# The notifier retries on its own schedule (Retry-After aware), so Dramatiq must not replay.
SLACK_OPTIONS = {"queue_name": messages.SLACK_QUEUE, "max_retries": 0, "time_limit": 2 * 60 * 1000}


@dramatiq.actor(actor_name=messages.START_SLACK_REQUEST, **CONTROL_OPTIONS)
def start_slack_request(
    receipt_id: int, team_id: str, user_id: str, channel_id: str, text: str, thread_ts: str = ""
) -> None:
    try:
        execution = slack_request_start(
            receipt_id=receipt_id,
            team_id=team_id,
            user_id=user_id,
            channel_id=channel_id,
            text=text,
            thread_ts=thread_ts,
        )
    except RequestRefused as exc:  # the text itself (a NUL character): said to its author alone
        messages.send_notice(channel_id, f"Sorry, that request was not started: {exc}.", thread_ts, user_id)
        return
    if execution is not None:
        # Posts the thread's first message right away (the execution's own events would too).
        request_thread_sync(execution.slack_thread.pk)


@dramatiq.actor(actor_name=messages.SYNC_SLACK_THREAD, **SLACK_OPTIONS)
def sync_slack_thread(thread_id: int) -> None:
    thread_sync_run(thread_id)


@dramatiq.actor(actor_name=messages.POST_SLACK_NOTICE, **SLACK_OPTIONS)
def post_slack_notice(channel_id: str, text: str, thread_ts: str = "", user_id: str = "") -> None:
    slack_notice_post(channel_id=channel_id, text=text, thread_ts=thread_ts, user_id=user_id)
