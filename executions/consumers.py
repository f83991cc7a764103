"""Websocket consumers of the staff console: one execution's event stream, and the overview.

Both are staff-only (anyone else is closed with 4403; the Origin is checked by asgi.py's
AllowedHostsOriginValidator). The channel layer is at-most-once, so the execution stream is made
exactly-once-in-order here: the consumer joins the group first, then replays stored Events after
the client's last seq (`?after=SEQ` or a {"resume": SEQ} message), and passes live events on only
in seq order; a live event that skips a seq triggers a replay from the database instead.

Messages to the client:
  {"kind": "event", "event": {execution_id, seq, type, task, payload, at}}
  {"kind": "progress", "progress": {execution_id?, task, progress}}
  {"kind": "synced", "last_seq": N}    (after a replay: the client has everything up to N)
"""

from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .events import CONSOLE_GROUP, execution_group
from .models import Event, Execution

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
REPLAY_BATCH = 500


def _is_staff(scope) -> bool:
    user = scope.get("user")
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def _after_from_query(scope) -> int:
    values = parse_qs(scope.get("query_string", b"").decode()).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


@database_sync_to_async
def _execution_exists(execution_id: str) -> bool:
    return Execution.objects.filter(pk=execution_id).exists()


@database_sync_to_async
def _events_after(execution_id: str, after: int) -> list[dict]:
    rows = Event.objects.filter(execution_id=execution_id, seq__gt=after).order_by("seq")[:REPLAY_BATCH]
    return [e.as_message() for e in rows]


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Channels' `dispatch` closes the stale database connections of the thread sync code shares
    (`aclose_old_connections`) before every handler: a hop to that one thread per socket per
    event, where daphne spent more time than anywhere else while events flowed. The live handlers
    never touch the database, and what does goes through `database_sync_to_async`, which closes
    them itself; so live messages go to their handler directly."""

    LIVE_MESSAGES = frozenset({"event.message", "event.batch", "event.progress"})

    async def dispatch(self, message):
        if message["type"] in self.LIVE_MESSAGES:
            await getattr(self, get_handler_name(message))(message)
        else:
            await super().dispatch(message)


class ExecutionConsumer(LiveConsumer):
    """`/ws/executions/<id>/`: the execution's events, gap-free from the client's last seq."""

    async def connect(self):
        self.execution_id = self.scope["url_route"]["kwargs"]["execution_id"]
        if not _is_staff(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not await _execution_exists(self.execution_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = execution_group(self.execution_id)
        self.last_seq = _after_from_query(self.scope)
        # Join before replaying: an event committed meanwhile is then either in the replay or
        # queued for us (and dropped as a duplicate if it is both).
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.replay()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        resume = content.get("resume") if isinstance(content, dict) else None
        if isinstance(resume, int) and not isinstance(resume, bool) and resume >= 0:
            # The client knows best what it has: a page that refetched its snapshot may move
            # forward, one that lost messages moves back.
            self.last_seq = resume
            await self.replay()

    async def replay(self) -> None:
        while True:
            batch = await _events_after(self.execution_id, self.last_seq)
            for message in batch:
                await self.send_json({"kind": "event", "event": message})
                self.last_seq = message["seq"]
            if len(batch) < REPLAY_BATCH:
                break
        await self.send_json({"kind": "synced", "last_seq": self.last_seq})

    async def event_message(self, message):
        await self.pass_on(message["event"])

    async def event_batch(self, message):
        for event in message["events"]:
            if not await self.pass_on(event):
                return  # a replay sent the rest

    async def pass_on(self, event: dict) -> bool:
        """Send a live event in seq order; False when a gap made it replay from the database instead."""
        seq = event["seq"]
        if seq <= self.last_seq:
            return True  # already sent by a replay
        if seq > self.last_seq + 1:
            await self.replay()  # the layer dropped something: the database has it
            return False
        self.last_seq = seq
        await self.send_json({"kind": "event", "event": event})
        return True

    async def event_progress(self, message):
        await self.send_json({"kind": "progress", "progress": message["progress"]})


class ConsoleConsumer(LiveConsumer):
    """`/ws/console/`: every execution's events and progress ticks, for the list and pools pages.

    Those pages show snapshots refetched from the database when events arrive (and after every
    reconnect), so a dropped message delays an update but never leaves a wrong one.
    """

    async def connect(self):
        if not _is_staff(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(CONSOLE_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(CONSOLE_GROUP, self.channel_name)

    async def event_message(self, message):
        await self.send_json({"kind": "event", "event": message["event"]})

    async def event_batch(self, message):
        for event in message["events"]:
            await self.send_json({"kind": "event", "event": event})

    async def event_progress(self, message):
        await self.send_json({"kind": "progress", "progress": message["progress"]})
