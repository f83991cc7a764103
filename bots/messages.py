"""Sending the Slack bot's work to the workers, by actor name (the actors live in `bots/actors.py`).

Notifications have a queue of their own so a slow or failing Slack never delays planning,
aggregation or any pool; starting a request goes on the control queue like planning.
"""

from executions.messages import CONTROL_QUEUE, send

SLACK_QUEUE = "slack"

START_SLACK_REQUEST = "start_slack_request"
SYNC_SLACK_THREAD = "sync_slack_thread"
POST_SLACK_NOTICE = "post_slack_notice"


def send_start_request(receipt_id: int, *args: str) -> None:
    send(START_SLACK_REQUEST, CONTROL_QUEUE, receipt_id, *args)


def send_thread_sync(thread_id: int, *, delay_ms: int | None = None) -> None:
    send(SYNC_SLACK_THREAD, SLACK_QUEUE, thread_id, delay_ms=delay_ms)


def send_notice(channel_id: str, text: str, thread_ts: str = "", user_id: str = "") -> None:
    send(POST_SLACK_NOTICE, SLACK_QUEUE, channel_id, text, thread_ts, user_id)
