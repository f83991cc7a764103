"""The execution event log: every state change appends an Event and, on commit, is published.

Publishing goes to the channel-layer groups of the execution and of the console, and to in-process
subscribers (the Slack notifier). Channel layers are at-most-once; clients resume from their last
`seq` through the database, so a lost publish costs latency, never state.
"""

import asyncio
import logging
import threading
from typing import Callable

from django.db import transaction
from django.db.models import F

from .models import Event, Execution

log = logging.getLogger("openclaw.events")

CONSOLE_GROUP = "console"
Subscriber = Callable[[dict], None]
_subscribers: list[Subscriber] = []


def execution_group(execution_id: str) -> str:
    # Group names allow only ASCII alphanumerics, hyphens, underscores and periods.
    return f"execution.{execution_id}"


def subscribe(callback: Subscriber) -> None:
    """Register an in-process callback for every committed event (as its message dict)."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def emit(execution_id: str, type_: str, *, task_key: str = "", payload: dict | None = None) -> Event:
    """Append an event with the execution's next seq; publish it once the transaction commits."""
    with transaction.atomic():
        # The UPDATE locks the execution row until commit, so seqs are gap-free and ordered.
        Execution.objects.filter(pk=execution_id).update(next_seq=F("next_seq") + 1)
        seq = Execution.objects.filter(pk=execution_id).values_list("next_seq", flat=True).get()
        event = Event.objects.create(execution_id=execution_id, seq=seq, type=type_, task_key=task_key,
                                     payload=payload or {})
        message = event.as_message()
        transaction.on_commit(lambda: publish(message))
    return event


def publish(message: dict) -> None:
    for callback in list(_subscribers):
        try:
            callback(message)
        except Exception:  # a subscriber must never break the state machine
            log.exception("event subscriber %r failed", callback)
    _publisher().send([execution_group(message["execution_id"]), CONSOLE_GROUP], {"type": "event.message", "event": message})


def publish_ephemeral(execution_id: str, message: dict) -> None:
    """Progress ticks: published, never stored (the next state change supersedes them)."""
    _publisher().send([execution_group(execution_id), CONSOLE_GROUP], {"type": "event.progress", "progress": message})


class _Publisher:
    """One event loop thread per process keeps the channel layer's Redis connections warm."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="event-publisher", daemon=True).start()

    def send(self, groups: list[str], message: dict) -> None:
        asyncio.run_coroutine_threadsafe(self._send(groups, message), self.loop)

    @staticmethod
    async def _send(groups: list[str], message: dict) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        for group in groups:
            try:
                await layer.group_send(group, message)
            except Exception as exc:  # at-most-once by design; clients resume by seq
                log.warning("publish to %s failed: %s", group, exc)


_instance: _Publisher | None = None
_instance_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = _Publisher()
        return _instance
