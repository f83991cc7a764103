"""An execution's events as Server-Sent Events (GET /api/execution/{id}/stream).

One SSE per stored event, in seq order: `id: <seq>`, `event: <type>`, `data: <the event as JSON,
with "status" when it changed the execution's status>`, from the first event or after the client's
`Last-Event-ID` (or `?after=`); a comment line as a heartbeat while nothing happens; the stream
ends right after the event that gives the execution a terminal status.

A stream holds no database connection while it waits. It waits on the channel layer (Redis) for
the events that the execution's group is sent once they are committed; those that follow the last
one sent are passed on as they are, and any gap (the layer is at-most-once) or a heartbeat is
filled from the database in a short read that closes its connection. 200 idle streams cost 200
coroutines and one Redis connection, not 200 database connections.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from .events import execution_group, status_announced
from .models import Event, Execution
from .states import EXECUTION_TERMINAL

READ_LIMIT = 500
PUMP_STOP_SEC = 1.0


def _stop_if_cancelled() -> None:
    """Raise the cancellation that a library call may have swallowed: redis-py can drop a
    CancelledError that lands inside a command, and a stream whose client went away must end
    (Python 3.11+ keeps the request in `Task.cancelling()`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def frame(message: dict) -> bytes:
    """One event as an SSE: its seq as the id, its type as the event, the event as JSON data."""
    data = dict(message)
    status = status_announced(message)
    if status:
        data["status"] = status
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {message['seq']}\nevent: {message['type']}\ndata: {payload}\n\n".encode()


def ends_stream(message: dict) -> bool:
    return status_announced(message) in EXECUTION_TERMINAL


def _read(execution_id: str, after: int) -> tuple[list[dict], str | None]:
    """The events after `after` and the execution's status, in one short visit to the database."""
    try:
        status = Execution.objects.filter(pk=execution_id).values_list("status", flat=True).first()
        events = [
            e.as_message()
            for e in Event.objects.filter(execution_id=execution_id, seq__gt=after).order_by("seq")[
                :READ_LIMIT
            ]
        ]
        return events, status
    finally:
        if not connection.in_atomic_block:
            connection.close()  # nothing held while the stream waits


# The shared thread pool: a stream keeps no thread of its own while it waits.
read_events = sync_to_async(_read, thread_sensitive=False)


class _Hints:
    """The events the execution's channel-layer group is sent, queued for one stream. The layer
    is at-most-once; what it loses, the next read from the database finds."""

    def __init__(self, execution_id: str):
        self.layer = get_channel_layer()
        self.group = execution_group(execution_id)
        self.channel = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = None

    async def __aenter__(self) -> "_Hints":
        if self.layer is not None:
            try:
                self.channel = await self.layer.new_channel()
                await self.layer.group_add(self.group, self.channel)
                self.task = asyncio.ensure_future(self._pump())
            except Exception:  # no layer: the stream falls back to reading at every heartbeat
                self.channel = None
        return self

    async def _pump(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            _stop_if_cancelled()
            if message.get("type") == "event.message":
                self.queue.put_nowait([message["event"]])
            elif message.get("type") == "event.batch":
                self.queue.put_nowait(message["events"])
            # progress ticks are not stored events: not streamed

    async def next(self, timeout: float) -> list[dict] | None:
        """The next committed events pushed, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def __aexit__(self, *exc) -> None:
        # Cancelled again until it stops: a cancel can be swallowed inside a Redis command.
        while self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task], timeout=PUMP_STOP_SEC)
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(self.group, self.channel)


async def execution_stream(execution_id: str, after: int, *, heartbeat_sec: float) -> AsyncIterator[bytes]:
    """The SSE body: the stored events after `after`, then each new one as it is committed."""
    last = after
    async with _Hints(execution_id) as hints:
        stale = True  # the database may hold events not yet sent
        while True:
            _stop_if_cancelled()
            if stale:
                events, status = await read_events(execution_id, last)
                for message in events:
                    yield frame(message)
                    last = message["seq"]
                    if ends_stream(message):
                        return
                if len(events) == READ_LIMIT:
                    continue  # more to read
                if not events and status in EXECUTION_TERMINAL:
                    return  # it had ended before this stream began (after its last event)
                stale = False
            pushed = await hints.next(heartbeat_sec)
            if pushed is None:
                yield b": heartbeat\n\n"
                stale = True  # whatever the layer lost meanwhile
                continue
            for message in sorted(pushed, key=lambda m: m["seq"]):
                if message["seq"] <= last:
                    continue  # read from the database already
                if message["seq"] != last + 1:
                    stale = True  # a gap: the database has what the layer lost
                    break
                yield frame(message)
                last = message["seq"]
                if ends_stream(message):
                    return
