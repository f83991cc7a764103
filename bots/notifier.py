"""Keeps each execution's Slack thread current, off the execution's path.

The event stream only says "something changed": an in-process subscriber enqueues one sync message
per thread on the `slack` queue (coalesced through a Redis key). The sync reads the database,
edits the status message at most once per SLACK_MIN_UPDATE_INTERVAL_SEC, posts the milestone
replies that the state calls for and not yet posted, and the final summary. Slack errors are
retried with backoff (or after Retry-After) a few times, then dropped with a log line: the next
event, or nothing at all, follows; an execution never waits for Slack.
"""

import functools
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from slack_sdk.errors import SlackApiError, SlackClientError

from executions.models import Execution

from . import messages, render
from .models import SlackThread
from .slack_api import slack_client, slack_configured

log = logging.getLogger("openclaw.slack")

# A pending sync this long overdue is presumed lost (a killed worker) and may be sent again.
PENDING_TTL_SEC = 30
LEASE_SEC = 60
BUSY_RETRY_SEC = 0.5
# Delayed messages may run a few milliseconds early by our clock; that is not worth another round.
CLOCK_SLACK_SEC = 0.05
MAX_FAILURES = 4
BACKOFF_SEC = 1.0
MAX_RETRY_AFTER_SEC = 120


def _pending_key(thread_id: int) -> str:
    return f"slack:sync-pending:{thread_id}"


def on_execution_event(message: dict) -> None:
    """Event subscriber: an execution with a Slack thread changed, so its thread needs a sync."""
    thread_id = slack_thread_of(message["execution_id"])
    if thread_id is not None:
        request_thread_sync(thread_id)


@functools.lru_cache(maxsize=10_000)
def slack_thread_of(execution_id: str) -> int | None:
    """The execution's Slack thread, if any. Remembered per process: a thread is created in the
    transaction that creates its execution, and events are published only after their commit, so
    the answer never changes once an event is seen (saves a query per event on every transition)."""
    return SlackThread.objects.filter(execution_id=execution_id).values_list("pk", flat=True).first()


def request_thread_sync(thread_id: int, *, delay_sec: float = 0) -> bool:
    """Enqueue a sync unless one is already pending: a burst of events becomes one message."""
    if not cache.add(_pending_key(thread_id), 1, timeout=int(delay_sec) + PENDING_TTL_SEC):
        return False
    messages.send_thread_sync(thread_id, delay_ms=int(delay_sec * 1000) or None)
    return True


def thread_sync_run(thread_id: int) -> None:
    """The `slack` actor's body: claim the thread, respect throttle and backoff, sync, count failures."""
    # From here on a new event must enqueue a new sync: this one may already have read the state.
    cache.delete(_pending_key(thread_id))
    if not slack_configured():
        log.warning("Slack thread %s not synced: Slack is not configured in this process", thread_id)
        return
    now = timezone.now()
    claimed = (
        SlackThread.objects.filter(pk=thread_id)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .update(sync_lease_until=now + timedelta(seconds=LEASE_SEC))
    )
    if not claimed:
        if SlackThread.objects.filter(pk=thread_id).exists():
            request_thread_sync(thread_id, delay_sec=BUSY_RETRY_SEC)  # another sync is talking to Slack
        return
    thread = SlackThread.objects.get(pk=thread_id)
    try:
        wait = max(throttle_wait(thread, now), backoff_wait(thread.team_id))
        if wait > CLOCK_SLACK_SEC:
            request_thread_sync(thread_id, delay_sec=wait)
            return
        thread_sync(thread)
        if thread.failures:
            _save(thread, failures=0)
    except (SlackApiError, SlackClientError, OSError) as exc:
        # The count lives on the thread, so an outage is given up on however the retries interleave
        # with syncs that new events asked for; after that, each new event gets one more try.
        failures = thread.failures + 1
        _save(thread, failures=failures)
        delay = retry_delay(exc, failures - 1)
        if delay is None or failures >= MAX_FAILURES:
            log.warning(
                "Slack thread %s (%s): giving up after %d attempt(s): %s",
                thread_id,
                thread.execution_id,
                failures,
                describe(exc),
            )
            return
        backoff_extend(thread.team_id, delay)
        log.info(
            "Slack thread %s (%s): %s; retrying in %.1fs",
            thread_id,
            thread.execution_id,
            describe(exc),
            delay,
        )
        request_thread_sync(thread_id, delay_sec=delay)
    finally:
        SlackThread.objects.filter(pk=thread_id).update(sync_lease_until=None)


def throttle_wait(thread: SlackThread, now) -> float:
    """Seconds until this thread's status message may be edited again."""
    if not thread.synced_at:
        return 0.0
    return (
        thread.synced_at + timedelta(seconds=settings.SLACK_MIN_UPDATE_INTERVAL_SEC) - now
    ).total_seconds()


def _backoff_key(team_id: str) -> str:
    return f"slack:backoff-until:{team_id}"


def backoff_wait(team_id: str) -> float:
    """Seconds until Slack wants to hear from us again (Retry-After, outage backoff), for every thread."""
    until = cache.get(_backoff_key(team_id))
    return until - time.time() if until else 0.0


def backoff_extend(team_id: str, delay_sec: float) -> None:
    # Rate limits apply to the whole workspace, not one thread: every sync waits them out.
    until = time.time() + delay_sec
    if until > (cache.get(_backoff_key(team_id)) or 0):
        cache.set(_backoff_key(team_id), until, timeout=int(delay_sec) + 5)


def retry_delay(exc: Exception, failures: int) -> float | None:
    """Seconds to wait before trying again, or None when retrying cannot help (bad channel, bad token)."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        if status == 429:
            retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
            try:
                return min(float(retry_after), MAX_RETRY_AFTER_SEC)
            except (TypeError, ValueError):
                return BACKOFF_SEC * 2**failures
        if status < 500:
            return None
    return BACKOFF_SEC * 2**failures


def describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        return render.clip(f"HTTP {exc.response.status_code} {error or ''}".strip(), 200)
    return f"{type(exc).__name__}: {exc}"


def _save(thread: SlackThread, **fields) -> None:
    for name, value in fields.items():
        setattr(thread, name, value)
    SlackThread.objects.filter(pk=thread.pk).update(**fields)


def thread_sync(thread: SlackThread) -> None:
    """Bring one thread up to the database state: status message, milestones, final summary.

    Progress is saved after every Slack call, so a failure part-way resumes where it stopped.
    """
    web = slack_client()
    public_url = settings.OPENCLAW_PUBLIC_URL
    execution = Execution.objects.get(pk=thread.execution_id)
    tasks = list(execution.tasks.order_by("id"))
    conflicts = list(execution.conflicts.all())
    status = render.status_message(execution, tasks, now=timezone.now(), public_url=public_url)
    if not thread.status_ts:
        reply = web.chat_postMessage(
            channel=thread.channel_id,
            thread_ts=thread.thread_ts or None,
            text=status.text,
            blocks=status.blocks,
            unfurl_links=False,
        )
        _save(
            thread,
            status_ts=reply["ts"],
            thread_ts=thread.thread_ts or reply["ts"],
            rendered_hash=status.digest,
        )
    for key, text in render.milestones(execution, tasks, conflicts):
        if key not in thread.posted_milestones:
            web.chat_postMessage(channel=thread.channel_id, thread_ts=thread.thread_ts, text=text)
            _save(thread, posted_milestones=[*thread.posted_milestones, key])
    if status.digest != thread.rendered_hash:
        web.chat_update(
            channel=thread.channel_id, ts=thread.status_ts, text=status.text, blocks=status.blocks
        )
        _save(thread, rendered_hash=status.digest)
    summary_key = render.summary_key(execution)
    if summary_key and summary_key not in thread.posted_milestones:
        summary = render.summary_message(execution, public_url=public_url)
        web.chat_postMessage(
            channel=thread.channel_id, thread_ts=thread.thread_ts, text=summary.text, unfurl_links=False
        )
        _save(thread, posted_milestones=[*thread.posted_milestones, summary_key])
    _save(thread, synced_at=timezone.now())


def slack_notice_post(*, channel_id: str, text: str, thread_ts: str = "", user_id: str = "") -> None:
    """A one-off message (a refusal, an answer): ephemeral to `user_id` when given. Failures are logged."""
    try:
        web = slack_client()
        if user_id:
            web.chat_postEphemeral(channel=channel_id, user=user_id, text=text, thread_ts=thread_ts or None)
        else:
            web.chat_postMessage(channel=channel_id, text=text, thread_ts=thread_ts or None)
    except (SlackApiError, SlackClientError, OSError, RuntimeError) as exc:
        log.warning("Slack notice to %s not delivered: %s", channel_id, describe(exc))
