"""The slack-bolt App: `/openclaw`, @mentions and the thread's buttons.

Listeners are thin: they check who is asking, answer from the database, or record the delivery
and enqueue the work; nothing here waits for a model or for Slack. The App is built lazily from
settings, so the project runs without any Slack configuration.
"""

import logging
import re
import threading

from django.conf import settings
from django.utils import timezone
from slack_bolt import Ack, App, BoltRequest
from slack_bolt.adapter.django import SlackRequestHandler

from executions.approval import ApprovalRefused, execution_approve, execution_reject
from executions.models import Execution
from executions.services import execution_cancel, execution_retry
from executions.throttling import SLACK_REQUESTS

from . import messages, render
from .models import SlackEventReceipt
from .services import (
    client_for_slack_user,
    slack_delivery_claim,
    slack_message_too_long,
    slack_start_counted,
    slack_start_retry_after,
    slack_thread_followed,
    slack_user_may_act,
    slack_workspace_is_linked,
)
from .slack_api import slack_client

log = logging.getLogger("openclaw.slack")

COMMAND = "/openclaw"
LIST_LIMIT = 10
MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")

HELP = (
    "*OpenClaw* builds software projects with parallel agents.\n"
    "• `/openclaw <what you need>` (or mention me) starts a project and follows it in a thread\n"
    "• `/openclaw status <execution id>` shows where one stands\n"
    "• `/openclaw list` lists your latest executions\n"
    "• a message in a project's thread asks for a follow-up on the same project"
)
REFUSAL = (
    "Sorry, this Slack workspace isn't linked to an OpenClaw account (or you aren't enabled on it), "
    "so I can't start projects here. An administrator can link it with "
    "`python manage.py link_slack <team id> <client name>`."
)
NOT_ENABLED = (
    "Sorry, you aren't enabled to use OpenClaw in this workspace, so I can't start or show projects "
    "for you. An administrator can enable you with "
    "`python manage.py link_slack {team_id} <client name> --user {user_id}`."
)
TOO_LONG = (
    "Sorry, that request is {length:,} characters long and OpenClaw accepts at most {limit:,}. "
    "Please shorten it and send it again."
)
SLOW_DOWN = (
    "You're starting projects quickly (at most {limit} a minute). "
    "Please wait {seconds} seconds and send that request again."
)
NOT_ALLOWED = "Sorry, you can't act on that execution: it belongs to an account you aren't linked to."

_lock = threading.Lock()
_apps: dict[tuple, App] = {}
_handlers: dict[tuple, SlackRequestHandler] = {}


def slack_app(*, socket_mode: bool = False) -> App | None:
    """The App for the current settings, or None when Slack is not configured."""
    token, secret = settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET
    if not token or not (secret or socket_mode):
        return None
    key = (token, secret, settings.SLACK_API_URL, socket_mode)
    with _lock:
        if key not in _apps:
            _apps[key] = build_app(secret=secret, socket_mode=socket_mode)
        return _apps[key]


def slack_request_handler() -> SlackRequestHandler | None:
    """The Django adapter around the HTTP App, or None when Slack is not configured."""
    app = slack_app()
    if app is None:
        return None
    key = (settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET, settings.SLACK_API_URL)
    with _lock:
        if key not in _handlers:
            _handlers[key] = SlackRequestHandler(app)
        return _handlers[key]


def build_app(*, secret: str, socket_mode: bool) -> App:
    # process_before_response: listeners run inside the request (they are quick), so Django's
    # per-request database handling applies and nothing runs on unmanaged threads.
    app = App(
        client=slack_client(),
        signing_secret=secret or None,
        process_before_response=True,
        token_verification_enabled=False,
        request_verification_enabled=not socket_mode,
    )
    app.command(COMMAND)(on_command)
    app.event("app_mention")(on_mention)
    app.event("message")(on_thread_message)
    app.action(render.CANCEL_ACTION)(on_cancel)
    app.action(render.APPROVE_ACTION)(on_approve)
    app.action(render.REJECT_ACTION)(on_reject)
    app.action(render.RETRY_ACTION)(on_retry)
    app.action(render.CONSOLE_ACTION)(on_console)
    return app


def answer_query(team_id: str, user_id: str, text: str, user_team: str = "") -> str | None:
    """Answers for help, `status <id>` and `list`, and refusals; None when the text is a project
    request that may start now."""
    words = text.split()
    if not words or (len(words) == 1 and words[0].lower() == "help"):
        return HELP
    client = client_for_slack_user(team_id=team_id, user_id=user_id, user_team=user_team)
    if client is None:
        if slack_workspace_is_linked(team_id=team_id):
            return NOT_ENABLED.format(team_id=team_id, user_id=user_id)
        return REFUSAL
    now = timezone.now()
    if len(words) == 2 and words[0].lower() == "status":
        execution = Execution.objects.filter(pk=words[1].strip("`"), client=client).first()
        if execution is None:
            return f"I can't find an execution `{words[1]}` for your account. Try `/openclaw list`."
        return render.status_reply(
            execution, list(execution.tasks.order_by("id")), now=now, public_url=settings.OPENCLAW_PUBLIC_URL
        )
    if len(words) == 1 and words[0].lower() == "list":
        return render.list_reply(
            list(Execution.objects.filter(client=client).order_by("-created_at")[:LIST_LIMIT]), now=now
        )
    if slack_message_too_long(text):
        return TOO_LONG.format(length=len(text), limit=settings.OPENCLAW_MAX_MESSAGE_CHARS)
    wait = slack_start_retry_after(team_id=team_id, user_id=user_id)
    if wait:
        return SLOW_DOWN.format(limit=SLACK_REQUESTS.limit, seconds=wait)
    return None


def on_command(ack: Ack, command: dict) -> None:
    text = (command.get("text") or "").strip()
    team_id, user_id = command["team_id"], command["user_id"]
    answer = answer_query(team_id, user_id, text, command.get("user_team") or "")
    if answer is not None:
        ack(response_type="ephemeral", text=answer)
        return
    # Slack does not retry slash commands, but a proxy may: trigger_id identifies the invocation.
    receipt = slack_delivery_claim(key=f"trigger:{command['trigger_id']}", team_id=team_id)
    if receipt is None:
        ack()
        return
    slack_start_counted(team_id=team_id, user_id=user_id)
    enqueue_start(receipt, team_id, user_id, command["channel_id"], text)
    ack(
        response_type="ephemeral",
        text=f"On it: planning “{render.clip(text, 120)}”. I'll post progress in a thread here.",
    )


def on_mention(body: dict, event: dict, request: BoltRequest) -> None:
    team_id = body.get("team_id") or event.get("team", "")
    user_id, channel_id = event.get("user", ""), event["channel"]
    thread_ts = event.get("thread_ts") or event["ts"]
    text = MENTION.sub("", event.get("text", "")).strip()
    # In a Slack Connect channel the author may belong to another workspace (`user_team`).
    answer = answer_query(team_id, user_id, text, event.get("user_team") or "")
    if answer is not None:
        messages.send_notice(channel_id, answer, thread_ts, user_id)  # only the asker sees it
        return
    # Slack redelivers an event it thinks we missed (X-Slack-Retry-Num) with the same event_id.
    receipt = slack_delivery_claim(key=f"event:{body['event_id']}", team_id=team_id)
    if receipt is None:
        log.info(
            "Slack event %s seen before (X-Slack-Retry-Num %s): ignored",
            body["event_id"],
            (request.headers.get("x-slack-retry-num") or ["0"])[0],
        )
        return
    slack_start_counted(team_id=team_id, user_id=user_id)
    enqueue_start(receipt, team_id, user_id, channel_id, text, thread_ts)


def on_thread_message(body: dict, event: dict, context) -> None:
    """A message in the thread of an execution is a follow-up request on its project. Other
    messages (channel chatter, edits, bots, our own posts, mentions: `on_mention` has those) are
    not for us; a follow-up from someone who may not act on the thread's execution is ignored."""
    if event.get("subtype") or event.get("bot_id") or not event.get("thread_ts"):
        return
    text = (event.get("text") or "").strip()
    bot_user = context.get("bot_user_id")
    if not text or (bot_user and f"<@{bot_user}" in text):
        return
    team_id = body.get("team_id") or event.get("team", "")
    user_id, channel_id, thread_ts = event.get("user", ""), event["channel"], event["thread_ts"]
    followed = slack_thread_followed(team_id=team_id, channel_id=channel_id, thread_ts=thread_ts)
    if followed is None:
        return
    if not slack_user_may_act(
        team_id=team_id, user_id=user_id, execution=followed.execution, user_team=event.get("user_team") or ""
    ):
        log.info(
            "Slack follow-up by %s/%s in %s ignored: not allowed", team_id, user_id, followed.execution_id
        )
        return
    if slack_message_too_long(text):
        messages.send_notice(
            channel_id,
            TOO_LONG.format(length=len(text), limit=settings.OPENCLAW_MAX_MESSAGE_CHARS),
            thread_ts,
            user_id,
        )
        return
    wait = slack_start_retry_after(team_id=team_id, user_id=user_id)
    if wait:
        messages.send_notice(
            channel_id, SLOW_DOWN.format(limit=SLACK_REQUESTS.limit, seconds=wait), thread_ts, user_id
        )
        return
    receipt = slack_delivery_claim(key=f"event:{body['event_id']}", team_id=team_id)
    if receipt is None:
        return  # Slack delivered it again
    slack_start_counted(team_id=team_id, user_id=user_id)
    enqueue_start(receipt, team_id, user_id, channel_id, text, thread_ts)


def enqueue_start(receipt: SlackEventReceipt, *args: str) -> None:
    """Hand the request to the control queue; if that fails, forget the delivery so Slack's retry counts."""
    try:
        messages.send_start_request(receipt.pk, *args)
    except Exception:
        SlackEventReceipt.objects.filter(pk=receipt.pk).delete()
        raise


def _permitted_execution(body: dict, action: dict) -> Execution | None:
    """The execution a button acts on, if the clicking user may act on it; else tells them why not."""
    user = body.get("user") or {}
    team_id = (body.get("team") or {}).get("id") or user.get("team_id", "")
    execution = Execution.objects.filter(pk=action.get("value", "")).first()
    if execution is None or not slack_user_may_act(
        team_id=team_id, user_id=user.get("id", ""), execution=execution, user_team=user.get("team_id", "")
    ):
        log.warning(
            "Slack user %s/%s refused %s on %s",
            team_id,
            user.get("id"),
            action.get("action_id"),
            action.get("value"),
        )
        channel = (body.get("channel") or {}).get("id")
        if channel:
            messages.send_notice(
                channel, NOT_ALLOWED, (body.get("message") or {}).get("thread_ts", ""), user.get("id", "")
            )
        return None
    return execution


def on_cancel(ack: Ack, body: dict, action: dict) -> None:
    ack()
    execution = _permitted_execution(body, action)
    if execution is not None:
        execution_cancel(execution, by=f"<@{body['user']['id']}> in Slack")


def on_retry(ack: Ack, body: dict, action: dict) -> None:
    ack()
    execution = _permitted_execution(body, action)
    if execution is not None:
        execution_retry(execution)


def on_approve(ack: Ack, body: dict, action: dict) -> None:
    ack()
    _decide(body, action, lambda execution, by: execution_approve(execution, by=by))


def on_reject(ack: Ack, body: dict, action: dict) -> None:
    ack()
    _decide(body, action, lambda execution, by: execution_reject(execution, by=by))


def _decide(body: dict, action: dict, decide) -> None:
    """Approve or reject from the thread; the user hears why not when it cannot be done (already
    decided, expired)."""
    execution = _permitted_execution(body, action)
    if execution is None:
        return
    try:
        decide(execution, f"<@{body['user']['id']}> in Slack")
    except ApprovalRefused as exc:
        channel = (body.get("channel") or {}).get("id")
        if channel:
            messages.send_notice(
                channel,
                f"Sorry, that did not go through: {exc.reason}.",
                (body.get("message") or {}).get("thread_ts", ""),
                body["user"]["id"],
            )


def on_console(ack: Ack) -> None:
    ack()  # a link button: Slack opens the URL, but still expects the click acknowledged
