"""Event streams: N Server-Sent-Event streams held by one daphne — database connections, memory and
threads per stream while they wait, and delivery once the executions run.

The executions are created with `approval: plan`, so after planning they wait (no task runs) while
N streams (spread over them) read their backlog and then sit idle on daphne. The daphne process is
measured before the streams open and once every stream is idle: its RSS, its threads, and its
database connections (SQLite: the open handles on the database file, none more than before;
PostgreSQL: its TCP connections to the server, at most its connection pool's size, which the
streams outnumber). Then every execution is approved through the API; each stream must
receive every stored event of its execution exactly once, in order, and end right after the
terminal one. Latency is arrival minus the event's `at` (stamped in its transaction).
"""

import asyncio
import json
import statistics
import threading
import time
from datetime import datetime

from . import harness

MESSAGE = "Build a restaurant website with online booking and secure payments"


class StreamClients(threading.Thread):
    """N SSE clients on one event loop; each keeps (seq, type, arrival) of what it receives."""

    def __init__(self, base: str, key: str, execution_ids: list[str], count: int):
        super().__init__(daemon=True)
        self.base, self.key = base, key
        self.targets = [execution_ids[i % len(execution_ids)] for i in range(count)]
        self.received: list[list[tuple[int, str, float, float]]] = [[] for _ in self.targets]
        self.closed = [False] * count
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self.main())

    async def main(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=len(self.targets) + 5)
        async with httpx.AsyncClient(base_url=self.base, timeout=None, limits=limits) as http:
            await asyncio.gather(*(self.follow(http, i) for i in range(len(self.targets))))

    async def follow(self, http, index: int) -> None:
        url = f"/api/execution/{self.targets[index]}/stream"
        fields: dict[str, str] = {}
        try:
            async with http.stream("GET", url, headers={"X-API-Key": self.key}) as response:
                if response.status_code != 200:
                    self.errors.append(f"HTTP {response.status_code}")
                    return
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(": ")
                        fields[name] = value
                        continue
                    if fields:
                        data = json.loads(fields["data"])
                        at = datetime.fromisoformat(data["at"]).timestamp()
                        self.received[index].append((int(fields["id"]), fields["event"], time.time(), at))
                        fields = {}
            self.closed[index] = True
        except Exception as exc:  # reported by the benchmark
            self.errors.append(f"{type(exc).__name__}: {exc}"[:120])


def process_figures(pid: int, sqlite_path: str | None) -> dict:
    """RSS (MB), threads and database connections of a process tree."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in procs) / 2**20
    threads = sum(p.num_threads() for p in procs)
    if sqlite_path:
        connections = sum(1 for p in procs for f in p.open_files() if f.path == sqlite_path)
    else:
        connections = sum(
            1 for p in procs for c in p.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432
        )
    return {"rss_mb": round(rss, 1), "threads": threads, "db_connections": connections}


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(ctx) -> dict:
    import httpx
    from django.db import connection

    from executions.models import Event, Execution
    from executions.services import execution_create

    streams_n, executions_n = (50, 10) if ctx.quick else (200, 20)
    harness.configure({"codegen": 6, "security": 3, "database": 3}, latency=0.2)
    client, key = harness.bench_client("streams")
    sqlite_path = str(connection.settings_dict["NAME"]) if connection.vendor == "sqlite" else None
    # PostgreSQL: daphne draws from a pool that keeps the connections its bursts opened, however
    # many streams there are; with more streams than the pool holds, none can be holding one.
    pool_size = connection.settings_dict.get("OPTIONS", {}).get("pool", {}).get("max_size")
    with (
        harness.engine_workers() as _,
        harness.web_server({"OPENCLAW_SSE_HEARTBEAT_SEC": "5"}) as (base, (web,)),
    ):
        ids = [
            execution_create(client=client, message=MESSAGE, session_key="streams", approval="plan").pk
            for _ in range(executions_n)
        ]
        wait_until(
            lambda: Execution.objects.filter(pk__in=ids, status="awaiting_approval").count() == len(ids),
            120,
            "the plans",
        )
        httpx.get(f"{base}/api/execution/{ids[0]}", headers={"X-API-Key": key}, timeout=10)  # warm up
        before = process_figures(web.pid, sqlite_path)
        backlog = {i: Event.objects.filter(execution_id=i).count() for i in ids}
        clients = StreamClients(base, key, ids, streams_n)
        clients.start()
        wait_until(
            lambda: (
                all(len(r) >= backlog[t] for r, t in zip(clients.received, clients.targets, strict=True))
                or clients.errors
            ),
            120,
            "every stream's backlog",
        )
        time.sleep(1.0)  # idle: every stream waits on the channel layer
        idle = process_figures(web.pid, sqlite_path)
        approved_at = time.time()
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
            answers = [http.post(f"/api/execution/{i}/approve").status_code for i in ids]
        wait_until(lambda: all(clients.closed) or len(clients.errors) > 0, 300, "every stream's end")
        clients.join(timeout=10)
        stored = {
            i: list(Event.objects.filter(execution_id=i).order_by("seq").values_list("seq", "type"))
            for i in ids
        }
    exact = sum(
        1
        for received, target in zip(clients.received, clients.targets, strict=True)
        if [(seq, type_) for seq, type_, _, _ in received] == stored[target]
    )
    ended = sum(
        1
        for received, closed in zip(clients.received, clients.closed, strict=True)
        if closed and received and received[-1][1] == "execution.finished"
    )
    latencies = [
        (arrival - at) * 1000
        for received in clients.received
        for _, _, arrival, at in received
        if at >= approved_at
    ]
    per_stream_kb = round((idle["rss_mb"] - before["rss_mb"]) * 1024 / streams_n, 1)
    latency = (
        {
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(harness.percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1),
        }
        if latencies
        else {}
    )
    return {
        "title": f"{streams_n} SSE streams on one daphne: idle cost, then delivery of every event",
        "columns": ["", "RSS MB", "threads", "DB connections"],
        "rows": [
            ["daphne before the streams", before["rss_mb"], before["threads"], before["db_connections"]],
            [f"with {streams_n} idle streams", idle["rss_mb"], idle["threads"], idle["db_connections"]],
            [
                "per stream",
                f"{per_stream_kb} KB",
                round((idle["threads"] - before["threads"]) / streams_n, 2),
                round((idle["db_connections"] - before["db_connections"]) / streams_n, 2),
            ],
        ],
        "checks": [
            (
                "no database connection held by idle streams",
                idle["db_connections"] <= (pool_size if pool_size else before["db_connections"]),
                f"{before['db_connections']} → {idle['db_connections']}"
                + (
                    f" (the pool's connections, at most {pool_size}, serve {streams_n} streams)"
                    if pool_size
                    else ""
                ),
            ),
            ("every approval accepted", answers.count(200) == len(ids), f"{answers.count(200)}/{len(ids)}"),
            ("every stream got every event once, in order", exact == streams_n, f"{exact}/{streams_n}"),
            ("every stream ended after the terminal event", ended == streams_n, f"{ended}/{streams_n}"),
            ("no stream error", not clients.errors, str(clients.errors[:3])),
        ],
        "notes": [
            f"latency event stamped → stream client receives, after approval: {latency}",
            f"{executions_n} executions, {streams_n // executions_n} streams each",
        ],
        "data": {
            "streams": streams_n,
            "executions": executions_n,
            "before": before,
            "idle": idle,
            "per_stream_kb": per_stream_kb,
            "latency": latency,
            "events_received": sum(len(r) for r in clients.received),
        },
    }
