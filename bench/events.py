"""Event latency: a state change's event written → a live subscriber receives it, p50 and p99.

The subscriber joins the channel-layer group `console` (channels_redis on the engine's Redis) in
this process, which is the path every websocket consumer is fed by: events.emit publishes on
commit to that group from the worker processes. Latency is the receive time minus the event's
`at` (its row's created_at, stamped inside the transaction), so it includes the rest of that
transaction and its commit: an upper bound of commit → receive. Delivery is at-most-once by
design; the count of events received against the rows stored is reported too.
"""

import asyncio
import threading
import time
from datetime import datetime

from . import harness
from .makespan import random_dag

POOLS = ("codegen", "security", "database")
DURATIONS = (0.1, 0.15, 0.2, 0.25, 0.3)


class Subscriber(threading.Thread):
    """Receives `event.message`s of the console group on its own event loop."""

    def __init__(self):
        super().__init__(daemon=True)
        self.received: list[tuple[str, int, float]] = []  # (execution id, seq, latency s)
        self.ready = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self.listen())

    async def listen(self) -> None:
        from channels.layers import get_channel_layer

        from executions.events import CONSOLE_GROUP

        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(CONSOLE_GROUP, channel)
        self.ready.set()
        while not self.stopped.is_set():
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            if message.get("type") == "event.message":
                event = message["event"]
                at = datetime.fromisoformat(event["at"]).timestamp()
                self.received.append((event["execution_id"], event["seq"], now - at))
        await layer.group_discard(CONSOLE_GROUP, channel)


def run(ctx) -> dict:
    from executions.models import Event

    executions, size = (3, 20) if ctx.quick else (8, 25)
    harness.configure({"codegen": 6, "security": 4, "database": 4},
                      options={"latency_rules": harness.latency_rules(DURATIONS)})
    client, _ = harness.bench_client()
    subscriber = Subscriber()
    subscriber.start()
    subscriber.ready.wait(10)
    with harness.engine_workers():
        plans = [random_dag(size, 500 + i, durations=DURATIONS) for i in range(executions)]
        ids = [harness.execution_from_plan(client, plan, harness.durations_of(plan),
                                           message="event latency benchmark").pk for plan in plans]
        harness.wait_terminal(ids, timeout=120)
        time.sleep(1)  # the last publishes are in flight
    subscriber.stopped.set()
    subscriber.join(5)
    mine = [r for r in subscriber.received if r[0] in set(ids)]
    stored = Event.objects.filter(execution_id__in=ids).count()
    stats = harness.summary_ms([latency for _, _, latency in mine])
    return {
        "title": "Event latency: event stamped in its transaction → channel-layer subscriber receives (ms)",
        "columns": ["events stored", "received", "p50", "p99", "max"],
        "rows": [[stored, len(mine), stats.get("p50_ms"), stats.get("p99_ms"), stats.get("max_ms")]],
        "checks": [("every stored event was received (at-most-once, so not guaranteed)", len(mine) == stored,
                    f"{len(mine)}/{stored}")],
        "data": {"executions": executions, "tasks_each": size, "latency": stats, "stored": stored,
                 "received": len(mine), "path": "channels_redis group 'console' subscriber in the bench process"},
        "notes": ["measured on the channel-layer group the websocket consumers are fed from "
                  "(the /ws/console/ consumer is not on main yet)"],
    }
