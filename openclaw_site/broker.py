"""Dramatiq's Redis broker, whose consumers are woken by enqueues, without consumers for the delay
queues that never receive a message.

A worker runs one consumer per declared queue and one per delay queue (`<queue>.DQ`), each polling
Redis with a Lua call whenever its queue is idle, with a backoff up to the worker's poll timeout;
every poll takes the worker's GIL from the threads that hold a transaction. Only the Slack
notifier sends delayed messages; the pool and control actors never do (their retries live in the
database), so their delay queues are neither consumed nor, by mistake, filled.

Polling alone makes every dispatch to an idle queue wait out part of the consumer's backoff (13 ms
on average at a 50 ms poll, several hundred at Dramatiq's default 1000 ms). So an enqueue also
PUBLISHes the queue's name, and a worker process's listener thread wakes that queue's consumers at
once (`QueueWakeups`); the poll timeout can then stay long. The wake-up is only a hint: a lost one
(the listener reconnecting after a Redis restart) costs what polling always cost, and messages stay
in Redis's lists as before.

Queues nobody waits on (the Slack notifier's: its edits are throttled to about one a second
anyway) are never woken, and polled with a backoff of up to `background_poll_ms`, whatever the
worker's timeout."""

import logging
import threading
import time
from collections import defaultdict
from uuid import uuid4

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, dq_name, q_name
from dramatiq.errors import ConnectionClosed

logger = logging.getLogger(__name__)
LISTENER_RECONNECT_SEC = 0.5
LISTENER_CHECK_CLOSED_SEC = 1.0


class QueueWakeups:
    """A worker process's subscriber to the broker's wake-up channel. Each queue name received bumps
    that queue's generation; a consumer that found its queue empty waits for its generation to move
    (or for its backoff to run out), so a message enqueued after its fetch cannot be missed."""

    def __init__(self, client: redis.Redis, channel: str):
        self.client, self.channel = client, channel
        self._changed = threading.Condition()
        self._generations: dict[str, int] = defaultdict(int)
        self._listener = None
        self._closed = False

    def start(self) -> None:
        with self._changed:
            # A listener inherited through fork() is not running in this process: start one.
            if (self._listener is None or not self._listener.is_alive()) and not self._closed:
                self._listener = threading.Thread(target=self._listen, name="queue-wakeups", daemon=True)
                self._listener.start()

    def generation(self, queue_name: str) -> int:
        with self._changed:
            return self._generations[queue_name]

    def wait(self, queue_name: str, seen: int, timeout_sec: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._generations[queue_name] != seen or self._closed, timeout_sec)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wake(self, queue_names=None) -> None:
        """Wake the consumers of these queues (None: of every queue waited on so far)."""
        with self._changed:
            for queue_name in list(self._generations) if queue_names is None else queue_names:
                self._generations[queue_name] += 1
            self._changed.notify_all()

    def _listen(self) -> None:
        while not self._closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                # Whatever was published while this process was not subscribed is lost: fetch now.
                self.wake()
                while not self._closed:
                    message = pubsub.get_message(timeout=LISTENER_CHECK_CLOSED_SEC)
                    if message is not None:
                        self.wake([message["data"].decode(errors="replace")])
            except (redis.RedisError, OSError) as exc:
                if not self._closed:
                    logger.warning(
                        "queue wake-ups: %s; reconnecting in %s s (consumers poll meanwhile)",
                        exc,
                        LISTENER_RECONNECT_SEC,
                    )
                    time.sleep(LISTENER_RECONNECT_SEC)
            except Exception:  # whatever it was, this thread must outlive it: wake-ups are all it does
                logger.exception(
                    "queue wake-ups: listener failed; reconnecting in %s s", LISTENER_RECONNECT_SEC
                )
                time.sleep(LISTENER_RECONNECT_SEC)
            finally:
                pubsub.close()


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, whose backoff ends early when a message is enqueued on its queue
    or, while it holds as many messages as it may prefetch, when one of them is acked."""

    def __init__(self, broker, queue_name, prefetch, timeout, wakeups: QueueWakeups):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wakeups = wakeups

    def __next__(self):
        if self.message_cache:
            return super().__next__()
        seen = self.wakeups.generation(self.queue_name)  # before the fetch: see QueueWakeups
        if self.outstanding_message_count < self.prefetch:
            try:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None
            if self.message_cache:
                return super().__next__()
        # An empty queue, or as many messages in hand as the worker may prefetch: wait for an enqueue
        # or an ack, or until the backoff runs out.
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
        self.wakeups.wait(self.queue_name, seen, backoff_ms / 1000)
        return None  # the worker's loop handles delayed messages, then asks again

    def ack(self, message):
        self._settle(super().ack, message)

    def nack(self, message):
        self._settle(super().nack, message)

    def _settle(self, settle, message) -> None:
        full = self.outstanding_message_count >= self.prefetch
        settle(message)
        if full:  # this consumer may be waiting for a free place: it has one now
            self.wakeups.wake([self.queue_name])


class UndelayedQueuesRedisBroker(RedisBroker):
    """`delayed_queues`: the queues whose messages may be delayed (their `.DQ` is consumed).
    `background_queues`: queues (with their `.DQ`) never woken, polled with a backoff of up to
    `background_poll_ms`."""

    def __init__(self, *args, delayed_queues=(), background_queues=(), background_poll_ms=500, **kwargs):
        super().__init__(*args, **kwargs)
        self.delayed_queues = frozenset(delayed_queues)
        self.background_queues = frozenset(background_queues)
        self.background_poll_ms = background_poll_ms
        self.wakeups = QueueWakeups(self.client, f"{self.namespace}:wake")

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if q_name(queue_name) in self.background_queues:
            return super().consume(queue_name, prefetch, self.background_poll_ms)
        self.wakeups.start()
        return _WakeableConsumer(self, queue_name, prefetch, timeout, self.wakeups)

    def close(self) -> None:
        self.wakeups.close()
        super().close()

    def declare_queue(self, queue_name: str) -> None:
        # RedisBroker.declare_queue, declaring the delay queue only where delays are allowed (a
        # worker adds a consumer for every queue and delay queue declared, at boot or later).
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)
        if queue_name in self.delayed_queues:
            self.delay_queues.add(dq_name(queue_name))
            self.emit_after("declare_delay_queue", dq_name(queue_name))

    def enqueue(self, message, *, delay=None):
        if delay is not None and q_name(message.queue_name) not in self.delayed_queues:
            raise ValueError(
                f"queue {message.queue_name!r} takes no delayed messages (nothing consumes its delay queue)"
            )
        message = super().enqueue(message, delay=delay)
        if q_name(message.queue_name) not in self.background_queues:
            self.client.publish(self.wakeups.channel, message.queue_name)
        return message

    def enqueue_many(self, messages: list[Message]) -> list[Message]:
        """Enqueue undelayed messages in one round trip: `enqueue`'s dispatch script for each and one
        wake-up per queue, in one pipeline (`enqueue` takes two round trips a message)."""
        if len(messages) == 1:
            return [self.enqueue(messages[0])]
        # As RedisBroker.enqueue: a unique id in Redis per enqueue, since a message may be retried.
        messages = [message.copy(options={"redis_message_id": str(uuid4())}) for message in messages]
        for message in messages:
            self.emit_before("enqueue", message, None)
        dispatch, unpack_size = self.scripts["dispatch"], self._max_unpack_size()
        with self.client.pipeline(transaction=False) as pipeline:
            for message in messages:
                pipeline.evalsha(
                    dispatch.sha,
                    1,
                    self.namespace,
                    "enqueue",
                    current_millis(),
                    message.queue_name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self._should_do_maintenance("enqueue"),
                    unpack_size,
                    message.options["redis_message_id"],
                    message.encode(),
                )
            for queue_name in dict.fromkeys(message.queue_name for message in messages):
                if q_name(queue_name) not in self.background_queues:
                    pipeline.publish(self.wakeups.channel, queue_name)
            results = pipeline.execute(raise_on_error=False)
        resent: set[str] = set()
        for message, result in zip(messages, results, strict=False):
            if isinstance(result, redis.exceptions.NoScriptError):
                # Redis restarted since the script was loaded: the script object loads it again.
                self.do_enqueue(message.queue_name, message.options["redis_message_id"], message.encode())
                resent.add(message.queue_name)
            elif isinstance(result, Exception):
                raise result
        for queue_name in resent - self.background_queues:  # the pipeline's wake-up came too early
            self.client.publish(self.wakeups.channel, queue_name)
        for message in messages:
            self.emit_after("enqueue", message, None)
        return messages
