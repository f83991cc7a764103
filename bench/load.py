"""Load test: concurrent API clients and open console websockets against the real system.

`python -m bench load [--quick]` (or `python -m bench.load`): daphne, `rundramatiq` workers and the
reaper run as their own processes; this process is the load generator on loopback. N API clients
(each with its own key) loop for D seconds — start an execution now and then, otherwise read their
executions, the list, the event log and the pools — while W staff websockets stay open on
/ws/console/. Afterwards every execution the API accepted must reach a terminal state (none lost).
Reports the error rate and p50/p99 latency per operation, websocket survival and messages, and
the peak memory of the web and worker processes. It runs twice: with one daphne, and with as many
daphne processes as there are cores on one listening socket (`--web N`, repeatable, chooses).
Then, per web tier, the API alone: the same clients reading `GET /api/pools` back to back with no
worker running, the web tier's own capacity.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = [
    "Build a restaurant website with online booking and secure payments",
    "REST API + frontend + security audit",
    "Build a contact form",
    "Design Supabase schema for orders and payments",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def make_fixtures(clients: int) -> tuple[list[str], str]:
    """API keys for N clients and a staff session cookie for the websockets."""
    from bench.harness import staff_cookie
    from executions.configuration import load_config
    from executions.models import ApiKey, Client

    offline = {
        "provider": "offline",
        "model": "openclaw-offline-1",
        "input_per_mtok": 3.0,
        "output_per_mtok": 15.0,
    }
    pool = {
        "timeout_sec": 60,
        "max_retries": 2,
        "retry_backoff_sec": 0.5,
        "model": "offline",
        "offline_latency_sec": 0.3,
    }
    load_config(
        {
            "parallel_execution": {
                "pm": {"model": "offline"},
                "worker_pools": {
                    "codegen": {**pool, "max_concurrent": 6},
                    "security": {**pool, "max_concurrent": 3},
                    "database": {**pool, "max_concurrent": 3},
                },
            },
            "models": {"offline": offline},
        },
        force=True,
    )
    keys = []
    for index in range(clients):
        client, _ = Client.objects.get_or_create(name=f"load-{index}")
        keys.append(ApiKey.issue(client)[1])
    return keys, staff_cookie("load-staff")


async def api_client(
    http, key: str, deadline: float, post_share: float, record, created: list[str], rng
) -> None:
    headers = {"X-API-Key": key}
    mine: list[str] = []
    while time.monotonic() < deadline:
        if not mine or rng.random() < post_share:
            op, call = (
                "POST execute-parallel",
                http.post(
                    "/api/execute-parallel",
                    headers=headers,
                    json={"message": rng.choice(MESSAGES), "sessionKey": "load", "project": "load"},
                ),
            )
        else:
            op, path = rng.choice(
                [
                    ("GET execution", f"/api/execution/{rng.choice(mine)}"),
                    ("GET executions", "/api/executions?limit=20"),
                    ("GET events", f"/api/execution/{rng.choice(mine)}/events?after=0"),
                    ("GET pools", "/api/pools"),
                ]
            )
            call = http.get(path, headers=headers)
        started = time.monotonic()
        try:
            response = await call
            status = response.status_code
            if op.startswith("POST") and status == 202:
                execution_id = response.json()["execution_id"]
                mine.append(execution_id)
                created.append(execution_id)
        except Exception as exc:  # a refused or reset connection is an error of the run
            status = type(exc).__name__
        record(op, status, time.monotonic() - started)
        await asyncio.sleep(rng.uniform(0.1, 0.3))


async def console_socket(url: str, cookie: str, origin: str, deadline: float, stats: dict) -> None:
    import websockets

    try:
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": origin}, open_timeout=30
        ) as socket:
            stats["connected"] += 1
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(socket.recv(), timeout=max(0.1, deadline - time.monotonic()))
                    stats["messages"] += 1
                except TimeoutError:
                    break
            stats["open_at_end"] += 1
    except Exception as exc:
        stats["errors"].append(f"{type(exc).__name__}: {exc}"[:120])


async def generate(
    base: str, keys: list[str], cookie: str, *, duration: float, websockets_n: int, post_share: float
) -> dict:
    import httpx

    samples: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    created: list[str] = []

    def record(op: str, status, latency: float) -> None:
        samples.setdefault(op, []).append(latency)
        if not (isinstance(status, int) and status < 400):
            errors[f"{op} → {status}"] = errors.get(f"{op} → {status}", 0) + 1

    ws_stats = {"connected": 0, "open_at_end": 0, "messages": 0, "errors": []}
    ws_base = base.replace("http://", "ws://")
    sockets_deadline = time.monotonic() + duration + 5
    sockets = [
        asyncio.create_task(
            console_socket(f"{ws_base}/ws/console/", cookie, base, sockets_deadline, ws_stats)
        )
        for _ in range(websockets_n)
    ]
    await asyncio.sleep(2)  # let the sockets open before the API load starts
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=len(keys) + 10, max_keepalive_connections=len(keys) + 10)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        rng = random.Random(8)
        await asyncio.gather(
            *[
                api_client(http, key, deadline, post_share, record, created, random.Random(rng.random()))
                for key in keys
            ]
        )
    await asyncio.gather(*sockets)
    return {"samples": samples, "errors": errors, "created": created, "websockets": ws_stats}


def wait_terminal(ids: list[str], timeout: float) -> dict:
    from executions.models import Execution

    deadline = time.monotonic() + timeout
    terminal = {"completed", "partial", "failed", "cancelled", "budget_exceeded"}
    while True:
        statuses = dict(Execution.objects.filter(pk__in=ids).values_list("id", "status"))
        done = sum(1 for i in ids if statuses.get(i) in terminal)
        if done == len(ids) or time.monotonic() > deadline:
            missing = [i for i in ids if i not in statuses]
            return {
                "accepted": len(ids),
                "terminal": done,
                "missing": len(missing),
                "by_status": {s: list(statuses.values()).count(s) for s in set(statuses.values())},
            }
        time.sleep(0.5)


def run(
    *,
    quick: bool = False,
    clients: int = 50,
    duration: float = 60,
    websockets_n: int = 200,
    post_share: float = 0.03,
    web_tiers: list[int] | None = None,
) -> dict:
    """The load once per web tier: one daphne, then as many as the machine has cores (each on the
    same listening socket, as `make run --web-processes N` starts them)."""
    from bench.harness import setup_database

    if quick:
        clients, duration, websockets_n = 10, 15, 40
    web_tiers = web_tiers or sorted({1, os.cpu_count() or 1})
    setup_database()
    keys, cookie = make_fixtures(clients)
    return {
        "web_tiers": {
            str(n): run_tier(
                n, keys, cookie, duration=duration, websockets_n=websockets_n, post_share=post_share
            )
            for n in web_tiers
        },
        "api_alone": {str(n): api_alone(n, keys, duration=10 if quick else 20) for n in web_tiers},
    }


def api_alone(web_processes: int, keys: list[str], *, duration: float) -> dict:
    """The web tier's own capacity: the clients read `GET /api/pools` back to back, each waiting for
    its answer, with no worker running and no websocket open."""
    import httpx

    from bench.harness import web_server

    async def client(http, key: str, deadline: float, latencies: list[float], statuses: Counter) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await http.get("/api/pools", headers={"X-API-Key": key})
            latencies.append(time.monotonic() - started)
            statuses[response.status_code] += 1

    async def generate(base: str) -> tuple[list[float], Counter]:
        latencies, statuses = [], Counter()
        limits = httpx.Limits(max_connections=len(keys) + 10, max_keepalive_connections=len(keys) + 10)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            deadline = time.monotonic() + duration
            await asyncio.gather(*(client(http, key, deadline, latencies, statuses) for key in keys))
        return latencies, statuses

    with web_server(processes=web_processes) as (base, _):
        latencies, statuses = asyncio.run(generate(base))
    return {
        "web_processes": web_processes,
        "clients": len(keys),
        "requests_per_sec": round(len(latencies) / duration, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "statuses": dict(statuses),
    }


def run_tier(
    web_processes: int, keys: list[str], cookie: str, *, duration: float, websockets_n: int, post_share: float
) -> dict:
    from bench.harness import PeakMemory, engine_workers, web_server

    with engine_workers() as workers, web_server(processes=web_processes) as (base, web):
        memory = PeakMemory(
            {"web": [p.pid for p in web], "workers": [workers.workers.pid, workers.reaper.pid]}
        )
        memory.start()
        started = time.monotonic()
        outcome = asyncio.run(
            generate(base, keys, cookie, duration=duration, websockets_n=websockets_n, post_share=post_share)
        )
        drained = wait_terminal(outcome["created"], timeout=300)
        drain_sec = time.monotonic() - started - duration
        peaks = memory.stop()
    total = sum(len(v) for v in outcome["samples"].values())
    failed = sum(outcome["errors"].values())
    return {
        "web_processes": web_processes,
        "clients": len(keys),
        "duration_sec": duration,
        "websockets": websockets_n,
        "requests": total,
        "requests_per_sec": round(total / duration, 1),
        "errors": outcome["errors"],
        "error_rate": round(failed / total, 5) if total else 0.0,
        "latency_ms": {
            op: {
                "n": len(v),
                "p50": round(statistics.median(v) * 1000, 1),
                "p99": round(percentile(v, 0.99) * 1000, 1),
            }
            for op, v in sorted(outcome["samples"].items())
        },
        "websocket": {k: v for k, v in outcome["websockets"].items() if k != "errors"}
        | {"errors": dict(Counter(outcome["websockets"]["errors"]))},
        "executions": drained,
        "drain_after_load_sec": round(drain_sec, 1),
        "peak_rss_mb": peaks,
    }


def report(results: dict) -> None:
    from rich.console import Console

    for result in results["web_tiers"].values():
        report_tier(result)
    for alone in results["api_alone"].values():
        Console().print(
            f"API alone, {alone['web_processes']} daphne process(es), {alone['clients']} clients: "
            f"{alone['requests_per_sec']} requests/s, p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms, "
            f"statuses {alone['statuses']}"
        )


def report_tier(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Load: {result['clients']} API clients × {result['duration_sec']:g}s + "
        f"{result['websockets']} websockets; {result['web_processes']} daphne process(es)"
    )
    for column in ("operation", "requests", "p50 ms", "p99 ms"):
        table.add_column(column)
    for op, row in result["latency_ms"].items():
        table.add_row(op, str(row["n"]), str(row["p50"]), str(row["p99"]))
    console = Console()
    console.print(table)
    console.print(
        f"{result['requests']} requests ({result['requests_per_sec']}/s), error rate "
        f"{result['error_rate']:.3%} {result['errors'] or ''}"
    )
    ws = result["websocket"]
    console.print(
        f"websockets: {ws['connected']} connected, {ws['open_at_end']} open at the end, "
        f"{ws['messages']} messages, errors: {ws['errors'] or 'none'}"
    )
    ex = result["executions"]
    console.print(
        f"executions: {ex['accepted']} accepted, {ex['terminal']} terminal, {ex['missing']} missing "
        f"{ex['by_status']}; drained {result['drain_after_load_sec']}s after the load stopped"
    )
    console.print(f"peak RSS MB: {result['peak_rss_mb']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--websockets", type=int, default=200)
    parser.add_argument(
        "--web", type=int, action="append", help="daphne processes (repeatable; default: 1 and the cores)"
    )
    args = parser.parse_args(argv)
    from bench.harness import prepare

    env = prepare()
    try:
        import django

        django.setup()
        result = run(
            quick=args.quick,
            clients=args.clients,
            duration=args.duration,
            websockets_n=args.websockets,
            web_tiers=args.web,
        )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
        report(result)
    finally:
        env.close()


if __name__ == "__main__":
    main()
