"""The execution event log: every state change appends an Event and, on commit, is published.

Publishing goes to the channel-layer groups of the execution and of the console, and to in-process
subscribers (the Slack notifier). Channel layers are at-most-once; clients resume from their last
`seq` through the database, so a lost publish costs latency, never state.
"""

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable

import redis
from channels.layers import get_channel_layer
from channels_redis.utils import _consistent_hash, decode_hosts
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import sql
from .models import Event, Execution
from .states import ExecutionStatus

log = logging.getLogger("openclaw.events")

CONSOLE_GROUP = "console"
# A publish waits at most this long for Redis; events are at-most-once, the state is in the database.
PUBLISH_TIMEOUT_SEC = 2
MAX_MESSAGES_PER_PIPELINE = 500
Subscriber = Callable[[dict], None]
_subscribers: list[Subscriber] = []
# The batch a transition is collecting in this thread: (execution id, pending items), see `batched`.
_batch = threading.local()


# The execution status each event type announces (`execution.finished` carries it in its payload).
STATUS_OF_EVENT = {
    "execution.created": ExecutionStatus.PLANNING,
    "execution.awaiting_approval": ExecutionStatus.AWAITING_APPROVAL,
    "execution.planned": ExecutionStatus.EXECUTING,
    "execution.retrying": ExecutionStatus.EXECUTING,
    "execution.aggregating": ExecutionStatus.AGGREGATING,
}


def status_announced(message: dict) -> str | None:
    """The status the execution moved to with this event, or None for an event that moved none."""
    if message["type"] == "execution.finished":
        return (message.get("payload") or {}).get("status")
    return STATUS_OF_EVENT.get(message["type"])


def execution_group(execution_id: str) -> str:
    # Group names allow only ASCII alphanumerics, hyphens, underscores and periods.
    return f"execution.{execution_id}"


def subscribe(callback: Subscriber) -> None:
    """Register an in-process callback for every committed event (as its message dict)."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def emit(execution_id: str, type_: str, *, task_key: str = "", payload: dict | None = None) -> None:
    """Append an event with the execution's next seq; publish it once the transaction commits."""
    emit_many(execution_id, [(type_, task_key, payload)])


def emit_many(execution_id: str, items: list[tuple[str, str, dict | None]]) -> None:
    """Append several events (type, task key, payload) in order: one seq reservation, one insert."""
    if not items:
        return
    pending = getattr(_batch, "current", None)
    if pending is not None and pending[0] == execution_id:
        pending[1].extend(items)
        return
    # No savepoint: an error here fails the caller's transaction anyway.
    with transaction.atomic(savepoint=False):
        messages = _append(execution_id, items)
        transaction.on_commit(lambda: publish_many(messages))


@contextlib.contextmanager
def batched(execution_id: str):
    """Collect the execution's events emitted inside the block and append them in one write at its
    end, in order (a transition that emits several saves a seq reservation and an insert each).
    Call it inside the transaction; an exception discards the batch with the transaction."""
    if getattr(_batch, "current", None) is not None:
        yield  # already collecting: the outer batch writes these too
        return
    items: list[tuple[str, str, dict | None]] = []
    _batch.current = (execution_id, items)
    try:
        yield
    finally:
        _batch.current = None
    emit_many(execution_id, items)


# Rows per INSERT: far below SQLite's and PostgreSQL's limits on a statement's parameters.
MAX_ROWS_PER_INSERT = 500


def _append(execution_id: str, items: list[tuple[str, str, dict | None]]) -> list[dict]:
    """Reserve the events' seqs and insert their rows; returns their messages.

    The seq reservation is an UPDATE of the execution's next_seq, which locks its row until commit,
    so seqs are gap-free and ordered. Every transition appends events, so the statements are SQL
    built once per row count rather than through the ORM, and on PostgreSQL the reservation and the
    insert are one statement (a data-modifying CTE): one round trip fewer per transition. The values
    are adapted by the model's fields, as `bulk_create()` does.
    """
    now = timezone.now()
    events = [
        Event(
            execution_id=execution_id,
            seq=0,
            type=type_,
            task_key=task_key,
            payload=payload or {},
            created_at=now,
        )
        for type_, task_key, payload in items
    ]
    count = len(events)
    one_statement = connection.vendor == "postgresql" and count <= MAX_ROWS_PER_INSERT
    if one_statement:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.reserve_seqs_and_insert_events(count, _COLUMNS_BUT_SEQ),
                [count, execution_id, count, *_row_params(events)],
            )
            seqs = [row[0] for row in cursor.fetchall()]
        if len(seqs) != count:
            raise Execution.DoesNotExist(execution_id)
        first = min(seqs)
    else:
        first = _reserve_seqs(execution_id, count) - count + 1
    for offset, event in enumerate(events):
        event.seq = first + offset
    if not one_statement:
        with connection.cursor() as cursor:
            for start in range(0, count, MAX_ROWS_PER_INSERT):
                chunk = events[start : start + MAX_ROWS_PER_INSERT]
                cursor.execute(
                    sql.insert_statement(Event, _COLUMNS, len(chunk)),
                    _row_params(chunk, with_seq=True),
                )
    return [event.as_message() for event in events]


_COLUMNS = ("execution", "seq", "type", "task_key", "payload", "created_at")
_COLUMNS_BUT_SEQ = tuple(name for name in _COLUMNS if name != "seq")


def _row_params(events: list[Event], *, with_seq: bool = False) -> list:
    return sql.insert_params(events, _COLUMNS if with_seq else _COLUMNS_BUT_SEQ)


def _reserve_seqs(execution_id: str, count: int) -> int:
    """Advance the execution's next_seq by `count` and return the new value (RETURNING: SQLite ≥ 3.35,
    PostgreSQL; it saves reading the row back)."""
    with connection.cursor() as cursor:
        cursor.execute(sql.reserve_seqs(), [count, execution_id])
        row = cursor.fetchone()
    if row is None:
        raise Execution.DoesNotExist(execution_id)
    return row[0]


def publish_many(messages: list[dict]) -> None:
    """Publish one execution's committed events, in seq order, then tell the in-process subscribers:
    one channel-layer message to both groups (a transition's events travel together)."""
    if not messages:
        return
    layer_message = (
        {"type": "event.message", "event": messages[0]}
        if len(messages) == 1
        else {"type": "event.batch", "events": messages}
    )
    _publisher().send([execution_group(messages[0]["execution_id"]), CONSOLE_GROUP], layer_message)
    for message in messages:
        for callback in list(_subscribers):
            try:
                callback(message)
            except Exception:  # a subscriber must never break the state machine
                log.exception("event subscriber %r failed", callback)


def publish_ephemeral(execution_id: str, message: dict) -> None:
    """Progress ticks: published, never stored (the next state change supersedes them)."""
    _publisher().send(
        [execution_group(execution_id), CONSOLE_GROUP], {"type": "event.progress", "progress": message}
    )


class _Publisher:
    """A thread per process publishes to the channel layer's groups: each group is a Redis pub/sub
    channel of channels_redis's `RedisPubSubChannelLayer`, named and serialized as that layer does.
    A commit only queues its message, so no transition waits on Redis (and for a core again after
    its reply, on a busy machine); the thread sends whatever has queued meanwhile in one pipeline,
    in order. It replaces an asyncio loop that ran the layer's own `group_send`, whose lock sent one
    group after the other, each behind the loop's wake-up and a task of its own (BENCHMARKS.md,
    "events")."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
        self.prefix = config.get("prefix", "asgi")
        self.shards = [
            redis.Redis.from_url(
                host["address"],
                socket_timeout=PUBLISH_TIMEOUT_SEC,
                socket_connect_timeout=PUBLISH_TIMEOUT_SEC,
            )
            for host in decode_hosts(config.get("hosts"))
        ]
        self.pid = os.getpid()
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="event-publisher", daemon=True).start()

    def send(self, groups: list[str], message: dict) -> None:
        self.pending.put((groups, message))

    def connect(self) -> None:
        """Open the connections now, from the calling thread (raises if Redis is not there): a
        nobody's group is sent a message nobody reads."""
        self.publish([([WARM_UP_GROUP], {"type": "warm.up"})])

    def _run(self) -> None:
        while True:
            batch = [self.pending.get()]
            while len(batch) < MAX_MESSAGES_PER_PIPELINE:
                try:
                    batch.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            self.deliver(batch)

    def deliver(self, batch: list[tuple[list[str], dict]]) -> None:
        try:
            self.publish(batch)
        except (redis.RedisError, OSError) as exc:  # at-most-once by design; clients resume by seq
            log.warning("publishing %d event message(s) failed: %s", len(batch), exc)
        except Exception:  # the thread must outlive whatever it was
            log.exception("publishing %d event message(s) failed", len(batch))

    def publish(self, batch: list[tuple[list[str], dict]]) -> None:
        if self.layer is None:
            return
        by_shard: dict[int, list[tuple[str, bytes]]] = {}
        for groups, message in batch:
            payload = self.layer.serialize(message)
            for group in groups:
                channel = f"{self.prefix}__group__{group}"  # the layer's `_get_group_channel_name`
                by_shard.setdefault(_consistent_hash(channel, len(self.shards)), []).append(
                    (channel, payload)
                )
        for shard, publishes in by_shard.items():
            with self.shards[shard].pipeline(transaction=False) as pipeline:
                for channel, payload in publishes:
                    pipeline.publish(channel, payload)
                pipeline.execute()


WARM_UP_GROUP = "openclaw.warm-up"


def warm_publisher() -> None:
    """Connect this process's publisher before the first event: made on the first commit instead,
    a worker's first events waited for the connection behind a transaction on the critical path."""
    _publisher().connect()


_instance: _Publisher | None = None
_instance_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _instance
    with _instance_lock:
        # A forked child inherits the parent's publisher but not its thread: it makes its own.
        if _instance is None or _instance.pid != os.getpid():
            _instance = _Publisher()
        return _instance
