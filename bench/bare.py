"""Bare Dramatiq on the engine's Redis: the reference the engine's overheads are compared with.

No Django, no database: actors that record when they start into Redis. Started as its own worker
with the engine's worker settings (`dramatiq bench.bare:BROKER --processes P --threads T`), so the
difference to the engine is exactly the engine's own work (transactions, events, ledger).
"""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Retries, ShutdownNotifications, TimeLimit

REDIS_URL = os.environ["REDIS_URL"]
BROKER = RedisBroker(
    url=REDIS_URL,
    namespace="bench-bare",
    middleware=[AgeLimit(), TimeLimit(), Callbacks(), Retries(), ShutdownNotifications()],
)
QUEUES = ("bare.a", "bare.b", "bare.c")
RECORD_KEY = "bench:bare:records"
_redis = redis.Redis.from_url(REDIS_URL)


def record(*fields) -> None:
    _redis.rpush(RECORD_KEY, " ".join(str(f) for f in fields))


def _chain_step(run: str, chain: int, step: int, steps: int, latency: float, previous_end: float) -> None:
    """One link of a chain across the three queues: like a task whose dependency just finished."""
    started = time.time()
    time.sleep(latency)
    ended = time.time()
    record("chain", run, chain, step, previous_end, started)
    if step + 1 < steps:
        CHAIN_STEPS[(step + 1) % len(QUEUES)].send(run, chain, step + 1, steps, latency, ended)


def _noop(run: str, sent: float) -> None:
    record("noop", run, sent, time.time())


CHAIN_STEPS = [
    dramatiq.actor(_chain_step, actor_name=f"chain_{q[-1]}", queue_name=q, broker=BROKER, max_retries=0)
    for q in QUEUES
]
NOOPS = [
    dramatiq.actor(_noop, actor_name=f"noop_{q[-1]}", queue_name=q, broker=BROKER, max_retries=0)
    for q in QUEUES
]
