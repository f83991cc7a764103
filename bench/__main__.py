"""`python -m bench [names…] [--quick]` (or `make bench BENCH_ARGS="…"`): run the benchmarks.

Prints one table per benchmark and writes bench/results/<name>.json with the machine it ran on.
"""

import argparse
import importlib
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import harness

BENCHMARKS = {
    "queries": "queries per transition and per API call (in process)",
    "makespan": "seed DAG and random DAGs: makespan / lower bound, rank vs FIFO dispatch",
    "dispatch": "dependency finished → agent started, vs bare Dramatiq",
    "throughput": "zero-latency tasks per second, vs bare Dramatiq no-ops",
    "events": "event committed → console websocket client receives",
    "cost": "serial vs parallel on the seed's three cost-comparison projects",
    "scale": "executions submitted at once through the HTTP API",
    "sandbox": "the agents' sandbox: start-to-exit of `true` (bubblewrap)",
    "agent_loop": "the engine's own time per turn of an agent's tool loop",
    "streams": "SSE streams on one daphne: database connections and memory per idle stream, delivery",
    "contracts": "the contract checks on a 200-file tree, and the integration gate's overhead",
    "git": "projects in git: commit + merge per task (200-file project), clone of 1,000 commits",
}
# Run only when named: API clients and console websockets for a minute (bench/load.py); LangGraph
# side by side, which needs the peer packages (`make bench-peers`) and about half an hour.
OPT_IN = {
    "load": "concurrent API clients and console websockets (only when named)",
    "peers": "the engine and LangGraph on the same DAGs (only when named; `make bench-peers`)",
}
# Opt-in benchmarks that print their own report; the others return their tables.
SELF_REPORTING = {"load"}
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Context:
    quick: bool
    worker_timeout_ms: int


def machine() -> dict:
    import sqlite3

    import redis
    from django.conf import settings
    from django.db import connection

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    database = f"SQLite {sqlite3.sqlite_version}"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "database": database,
        "redis": redis.Redis.from_url(settings.REDIS_URL).info("server")["redis_version"],
        "redis_embedded": "REDIS_URL" not in os.environ
        or os.environ.get("REDIS_URL", "").startswith("unix://"),
        "worker_processes": settings.WORKER_PROCESSES,
        "worker_threads": settings.WORKER_THREADS,
    }


def show(console, name: str, result: dict, seconds: float) -> None:
    """The benchmark's table, any further tables it returns (`tables`), its checks and notes."""
    from rich.table import Table

    tables = [{**result, "title": f"{name}: {result['title']} ({seconds:.0f} s)"}, *result.get("tables", [])]
    for shown in tables:
        table = Table(title=shown["title"], title_justify="left")
        for column in shown["columns"]:
            table.add_column(column)
        for row in shown["rows"]:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
    for label, ok, detail in result.get("checks", []):
        console.print(f"  {'[green]PASS' if ok else '[red]MISS'}[/] {label}: {detail}")
    for note in result.get("notes", []):
        console.print(f"  [dim]{note}[/]")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {k:<11} {v}" for k, v in {**BENCHMARKS, **OPT_IN}.items()),
    )
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHMARKS, *OPT_IN],
        metavar="name",
        help="benchmarks to run (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (scale: 100 and 300 executions)")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)

    # SIGTERM unwinds like Ctrl-C, so every process the run started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    environment = harness.prepare()
    try:
        import django

        django.setup()
        from django.conf import settings
        from rich.console import Console

        harness.setup_database()
        console = Console(width=None if sys.stdout.isatty() else 160)
        ctx = Context(quick=args.quick, worker_timeout_ms=settings.DRAMATIQ_WORKER_TIMEOUT_MS)
        info = machine()
        console.print(f"[bold]Machine[/]: {info}")
        RESULTS.mkdir(exist_ok=True)
        started_all = time.monotonic()
        failures = 0
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            started = time.monotonic()
            if name in SELF_REPORTING:
                result = {
                    "title": module.__doc__.splitlines()[0],
                    "columns": [],
                    "rows": [],
                    "data": module.run(quick=args.quick),
                }
                module.report(result["data"])
                seconds = time.monotonic() - started
            else:
                result = module.run(ctx)
                seconds = time.monotonic() - started
                show(console, name, result, seconds)
            failures += sum(1 for _, ok, _ in result.get("checks", []) if not ok)
            (RESULTS / f"{name}.json").write_text(
                json.dumps(
                    {
                        "benchmark": name,
                        "quick": args.quick,
                        "seconds": round(seconds, 1),
                        "machine": info,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **result,
                    },
                    indent=2,
                    default=str,
                )
                + "\n"
            )
        console.print(
            f"[bold]Total[/]: {time.monotonic() - started_all:.0f} s; "
            f"{failures} target(s) missed; results in {RESULTS}/"
        )
        return 0
    finally:
        environment.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
