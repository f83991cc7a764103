"""Slack actors: starting a request (control queue) and notifications (their own `slack` queue).

Notifications have a queue of their own so a slow or failing Slack never delays planning,
aggregation or any pool; workers consume it because the actor declares it at import.
"""

import dramatiq

from executions.tasks import CONTROL_OPTIONS

SLACK_QUEUE = "slack"
# The notifier retries on its own schedule (Retry-After aware), so Dramatiq must not replay.
SLACK_OPTIONS = {"queue_name": SLACK_QUEUE, "max_retries": 0, "time_limit": 2 * 60 * 1000}


@dramatiq.actor(**CONTROL_OPTIONS)
def start_slack_request(
    receipt_id: int, team_id: str, user_id: str, channel_id: str, text: str, thread_ts: str = ""
) -> None:
    from .notifier import request_thread_sync
    from .services import slack_request_start

    execution = slack_request_start(
        receipt_id=receipt_id,
        team_id=team_id,
        user_id=user_id,
        channel_id=channel_id,
        text=text,
        thread_ts=thread_ts,
    )
    if execution is not None:
        # Posts the thread's first message right away (the execution's own events would too).
        request_thread_sync(execution.slack_thread.pk)


@dramatiq.actor(**SLACK_OPTIONS)
def sync_slack_thread(thread_id: int) -> None:
    from .notifier import thread_sync_run

    thread_sync_run(thread_id)


@dramatiq.actor(**SLACK_OPTIONS)
def post_slack_notice(channel_id: str, text: str, thread_ts: str = "", user_id: str = "") -> None:
    from .notifier import slack_notice_post

    slack_notice_post(channel_id=channel_id, text=text, thread_ts=thread_ts, user_id=user_id)
