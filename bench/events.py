"""Event latency: a state change's event written → a console websocket client receives it.

A staff websocket client in a process of its own stays connected to daphne's /ws/console/ (the
live console's feed) while executions run on the real workers. events.emit publishes each event on
commit from the worker processes to the channel layer (channels_redis's pub/sub layer on the
engine's Redis), daphne's ConsoleConsumer forwards it to the socket. Latency is the receive time
minus the event's `at` (its row's created_at, stamped inside the transaction), so it also covers
the rest of that transaction and its commit: an upper bound of commit → receive. Delivery to the console is
at-most-once by design; the events received are counted against the rows stored.
"""

import asyncio
import json
import multiprocessing
import time
from datetime import datetime

from . import harness
from .makespan import random_dag

POOLS = ("codegen", "security", "database")
DURATIONS = (0.1, 0.15, 0.2, 0.25, 0.3)


class ConsoleSocket:
    """A websocket client of /ws/console/ in a process of its own, as a browser is: the benchmark's
    own work (creating the executions) must not hold up its receiving. Stamps every event."""

    def __init__(self, url: str, cookie: str, origin: str):
        context = multiprocessing.get_context("spawn")
        self.ready, self.stopped = context.Event(), context.Event()
        self.results, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_listen_in_child, args=(url, cookie, origin, self.ready, self.stopped, sender), daemon=True
        )
        self.received: list[tuple[str, int, float]] = []  # (execution id, seq, latency s)
        self.error: str | None = None

    def start(self) -> None:
        self.process.start()

    def join(self, timeout: float) -> None:
        """Stop listening and collect what was received."""
        self.stopped.set()
        if self.results.poll(timeout):
            self.received, self.error = self.results.recv()
        self.process.join(timeout)


def _listen_in_child(url, cookie, origin, ready, stopped, sender) -> None:
    received: list[tuple[str, int, float]] = []
    error = None
    try:
        asyncio.run(_listen(url, cookie, origin, ready, stopped, received))
    except Exception as exc:  # reported by the benchmark
        error = f"{type(exc).__name__}: {exc}"
        ready.set()
    sender.send((received, error))


async def _listen(url, cookie, origin, ready, stopped, received) -> None:
    import websockets

    async with websockets.connect(
        url, additional_headers={"Cookie": cookie, "Origin": origin}, open_timeout=30
    ) as socket:
        ready.set()
        while not stopped.is_set():
            try:
                raw = await asyncio.wait_for(socket.recv(), timeout=0.5)
            except TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            if message.get("kind") == "event":
                event = message["event"]
                at = datetime.fromisoformat(event["at"]).timestamp()
                received.append((event["execution_id"], event["seq"], now - at))


def run(ctx) -> dict:
    from executions.models import Event

    executions, size = (3, 20) if ctx.quick else (8, 25)
    harness.configure(
        {"codegen": 6, "security": 4, "database": 4},
        options={"latency_rules": harness.latency_rules(DURATIONS)},
    )
    client, _ = harness.bench_client()
    with harness.web_server() as (base, _), harness.engine_workers():
        socket = ConsoleSocket(
            base.replace("http://", "ws://") + "/ws/console/", harness.staff_cookie("bench-staff"), base
        )
        socket.start()
        socket.ready.wait(30)
        plans = [random_dag(size, 500 + i, durations=DURATIONS) for i in range(executions)]
        ids = [
            harness.execution_from_plan(
                client, plan, harness.durations_of(plan), message="event latency benchmark"
            ).pk
            for plan in plans
        ]
        harness.wait_terminal(ids, timeout=120)
        time.sleep(1)  # the last publishes are in flight
        socket.join(10)
        if socket.error:
            raise RuntimeError(f"the console socket failed: {socket.error}")
    received = socket.received
    mine = [r for r in received if r[0] in set(ids)]
    stored = Event.objects.filter(execution_id__in=ids).count()
    stats = harness.summary_ms([latency for _, _, latency in mine])
    return {
        "title": "Event latency: event stamped in its transaction → console websocket client receives (ms)",
        "columns": ["events stored", "received", "p50", "p99", "max"],
        "rows": [[stored, len(mine), stats.get("p50_ms"), stats.get("p99_ms"), stats.get("max_ms")]],
        "checks": [
            (
                "every stored event was received (at-most-once, so not guaranteed)",
                len(mine) == stored,
                f"{len(mine)}/{stored}",
            )
        ],
        "data": {
            "executions": executions,
            "tasks_each": size,
            "latency": stats,
            "stored": stored,
            "received": len(mine),
            "path": "worker → channels_redis → daphne ConsoleConsumer → websocket",
        },
    }
