"""Dramatiq's Redis broker, without consumers for the delay queues that never receive a message.

A worker runs one consumer per declared queue and one per delay queue (`<queue>.DQ`), each polling
Redis with a Lua call whenever its queue is idle: up to 20 times a second at the engine's poll
timeout, every poll taking the worker's GIL from the threads that hold a transaction. Only the
Slack notifier sends delayed messages; the pool and control actors never do (their retries live in
the database), so their delay queues are neither consumed nor, by mistake, filled.

Queues nobody waits on (the Slack notifier's: its edits are throttled to about one a second
anyway) are polled at `background_poll_ms` instead of the worker's short timeout, which is there
for the pool and control queues' dispatch latency.
"""

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, q_name


class UndelayedQueuesRedisBroker(RedisBroker):
    """`delayed_queues`: the queues whose messages may be delayed (their `.DQ` is consumed).
    `background_queues`: queues (with their `.DQ`) polled at least `background_poll_ms` apart."""

    def __init__(self, *args, delayed_queues=(), background_queues=(), background_poll_ms=500, **kwargs):
        super().__init__(*args, **kwargs)
        self.delayed_queues = frozenset(delayed_queues)
        self.background_queues = frozenset(background_queues)
        self.background_poll_ms = background_poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if q_name(queue_name) in self.background_queues:
            timeout = max(timeout, self.background_poll_ms)
        return super().consume(queue_name, prefetch, timeout)

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
            raise ValueError(f"queue {message.queue_name!r} takes no delayed messages (nothing consumes its delay queue)")
        return super().enqueue(message, delay=delay)
