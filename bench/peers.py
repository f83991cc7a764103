"""The engine side by side with LangGraph: the same DAGs, pool limits and latencies, in one run.

Run only when named, with the peer packages installed: `make bench-peers` (a `.venv-peers` with
requirements.txt and bench/requirements-peers.txt), or `.venv-peers/bin/python -m bench peers`.

DAGs: the seed's restaurant DAG (its four tasks, pools and latencies ÷100, as bench/makespan.py),
and seeded random DAGs of 20 and 60 tasks (makespan.random_dag: 0.3–1.0 s a task, one duration
unit = 10 ms), 30 of each size (`--quick`: 5). Pool limits: makespan.LIMITS (codegen 3, security 2,
database 2). Each DAG runs through every variant in turn before the next DAG, so the machine's
drift spreads over all of them:

- `engine`: the real workers and reaper (`rundramatiq`, production timings), the offline model
  sleeping each task's latency, the execution created through the engine's services.
- LangGraph (bench/peers_langgraph.py): the idiomatic `StateGraph` (`max_concurrency` = the sum of
  the limits), the same with its SQLite checkpointer (a fresh file per run), and the Functional API
  with a semaphore per pool. Their tasks sleep their latency.

Per variant and size: makespan (first task start → last task end) / lower bound (executions.dag:
max(critical path, max over pools of work / limit)), mean and p95; for the engine also makespan /
its own simulated list schedule (`simulate_makespan`, the pure engine overhead); the peak number of
a pool's tasks running at once against the limit, and in how many DAGs a limit was broken; the time
from the request (engine: creating the execution; LangGraph: `ainvoke`) to the first task's start.

Durability (`durability`): one 20-task DAG, killed with SIGKILL once half its tasks have finished,
restarted at once. Engine: the worker processes are killed and started again; the reaper expires
the dead attempts' leases (OPENCLAW_LEASE_SEC) and the tasks run again. LangGraph: the process is
killed and started again; the SQLite-checkpointer variant resumes its thread from the checkpoint,
the plain StateGraph starts from zero. Reported: what finished before the kill, what was in flight,
what ran again, whether the DAG finished, and the time lost against an uninterrupted run.
"""

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import harness, makespan
from .harness import plan_task
from .scale import max_overlap

LIMITS = makespan.LIMITS
SIZES = (20, 60)
DAGS, QUICK_DAGS = 30, 5  # random DAGs per size
SEED_RUNS, QUICK_SEED_RUNS = 10, 3  # runs of the seed's DAG (always the same)
ENGINE = "engine"
PEER_VARIANTS = {
    "stategraph": "LangGraph StateGraph",
    "stategraph-sqlite": "LangGraph StateGraph + SQLite checkpointer",
    "functional": "LangGraph Functional API + pool semaphores",
}
RESTAURANT = makespan.RESTAURANT
DURABILITY_SEED = 20 * 31  # makespan's own 20-task DAG
TARGET_MEAN, TARGET_P95, TARGET_SIM = 1.03, 1.10, 1.01


@dataclass
class Run:
    makespan: float
    bound: float
    first_start: float  # seconds from the request to the first task's start
    peaks: dict[str, int]
    simulated: float | None = None  # the engine's list-schedule prediction
    # The same list schedule with each task's measured duration (its latency plus the worker's own
    # work on it): what is left of the gap is dispatch alone.
    simulated_measured: float | None = None

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound

    @property
    def broke_limit(self) -> bool:
        return any(peak > LIMITS[pool] for pool, peak in self.peaks.items())


@dataclass
class Tally:
    runs: list[Run] = field(default_factory=list)

    def summary(self) -> dict:
        ratios = [r.ratio for r in self.runs]
        sims = [r.makespan / r.simulated for r in self.runs if r.simulated]
        sims_measured = [r.makespan / r.simulated_measured for r in self.runs if r.simulated_measured]
        firsts = [r.first_start for r in self.runs]
        peaks = {pool: max(r.peaks.get(pool, 0) for r in self.runs) for pool in LIMITS}
        return {
            "dags": len(self.runs),
            "ratio_mean": round(statistics.fmean(ratios), 3),
            "ratio_p95": round(harness.percentile(ratios, 95), 3),
            "vs_simulated_mean": round(statistics.fmean(sims), 3) if sims else None,
            "vs_simulated_p95": round(harness.percentile(sims, 95), 3) if sims else None,
            "vs_simulated_measured_mean": round(statistics.fmean(sims_measured), 3)
            if sims_measured
            else None,
            "peaks": peaks,
            "dags_over_a_limit": sum(r.broke_limit for r in self.runs),
            "first_start_p50_ms": round(1000 * statistics.median(firsts), 1),
            "first_start_p95_ms": round(1000 * harness.percentile(firsts, 95), 1),
        }


def seed_plan() -> list[dict]:
    """The restaurant request's DAG as the offline PM plans it, with the seed's latencies ÷100."""
    from executions.pm_coordinator import detect_streams

    tasks = []
    for stream in detect_streams(RESTAURANT):
        description = stream.description.lower()
        latency = next(r["latency_sec"] for r in makespan.SEED_LATENCIES if r["match"] in description)
        tasks.append(
            plan_task(stream.key, stream.pool, latency, stream.blocked_by, stream.priority, label="seed")
        )
    return tasks


def peer_plan(plan: list[dict]) -> list[dict]:
    durations = harness.durations_of(plan)
    return [
        {"id": t["id"], "pool": t["pool"], "duration": durations[t["id"]], "deps": list(t["blocked_by"])}
        for t in plan
    ]


def bound_of(plan: list[dict]) -> tuple[float, float]:
    """(lower bound, the engine's simulated list schedule) from the model latencies."""
    from executions.dag import lower_bound, simulate_makespan

    nodes = makespan.nodes_of(plan, harness.durations_of(plan))
    return lower_bound(nodes, LIMITS), simulate_makespan(nodes, LIMITS, policy="rank")


def peaks_of(spans: list[tuple[str, float, float]]) -> dict[str, int]:
    by_pool: dict[str, list] = {}
    for pool, start, end in spans:
        by_pool.setdefault(pool, []).append((start, end))
    return {pool: max_overlap(intervals) for pool, intervals in by_pool.items()}


class WorkersGone(Exception):
    """The worker processes exited during a run (on a shared machine, something outside may stop them)."""


def wait_completed(execution_id: str, workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = harness.wait_terminal([execution_id], timeout=1)[execution_id]
        if status in harness.TERMINAL:
            assert status == "completed", (execution_id, status)
            return
        if workers.workers.poll() is not None or workers.reaper.poll() is not None:
            raise WorkersGone(execution_id)
        assert time.monotonic() < deadline, (execution_id, status)


def engine_run(client, plan: list[dict], workers) -> Run:
    from executions.dag import simulate_makespan
    from executions.models import Attempt, Task

    bound, simulated = bound_of(plan)
    requested = time.time()
    execution = harness.execution_from_plan(
        client, plan, harness.durations_of(plan), message=f"peers: DAG of {len(plan)} tasks"
    )
    wait_completed(execution.pk, workers, timeout=120)
    first, last = harness.task_window([execution.pk])
    attempts = Attempt.objects.filter(task__execution=execution)
    spans = [
        (pool, started.timestamp(), finished.timestamp())
        for pool, started, finished in attempts.values_list("task__pool", "started_at", "finished_at")
    ]
    measured = {
        key: (finished - started).total_seconds()
        for key, started, finished in attempts.values_list("task__key", "started_at", "finished_at")
    }
    return Run(
        last - first,
        bound,
        first - requested,
        peaks_of(spans),
        simulated,
        # The engine's own ranks (from the latencies) over the measured durations.
        simulate_makespan(
            makespan.nodes_of(plan, measured),
            LIMITS,
            ranks=dict(Task.objects.filter(execution=execution).values_list("key", "rank")),
        ),
    )


def peer_run(variant: str, plan: list[dict], workdir: Path) -> Run:
    from . import peers_langgraph

    bound, _ = bound_of(plan)
    starts: dict[str, tuple[str, float]] = {}
    spans: list[tuple[str, float, float]] = []

    def record(kind: str, task_id: str, pool: str, at: float) -> None:
        if kind == "start":
            starts[task_id] = (pool, at)
        else:
            spans.append((pool, starts[task_id][1], at))

    checkpoint = str(Path(tempfile.mkdtemp(dir=workdir)) / "checkpoints.sqlite")
    invoked = asyncio.run(
        peers_langgraph.run(variant, peer_plan(plan), LIMITS, record, checkpoint=checkpoint)
    )
    assert len(spans) == len(plan), (variant, len(spans), len(plan))
    first = min(s for _, s, _ in spans)
    return Run(max(e for _, _, e in spans) - first, bound, first - invoked, peaks_of(spans))


def compare(ctx, client, workdir: Path) -> dict[str, dict[str, Tally]]:
    from executions.models import Execution
    from executions.services import execution_cancel

    count = QUICK_DAGS if ctx.quick else DAGS
    groups = {"seed restaurant (4 tasks)": [seed_plan()] * (QUICK_SEED_RUNS if ctx.quick else SEED_RUNS)}
    for n in SIZES:
        groups[f"random n={n}"] = [makespan.random_dag(n, n * 31 + i) for i in range(count)]
    tallies: dict[str, dict[str, Tally]] = {}
    with harness.engine_workers() as workers:
        for group, plans in groups.items():
            tally = tallies[group] = {variant: Tally() for variant in (ENGINE, *PEER_VARIANTS)}
            for plan in plans:
                try:
                    tally[ENGINE].runs.append(engine_run(client, plan, workers))
                except WorkersGone as gone:  # cancelled, and the DAG run again on new workers
                    execution_cancel(Execution.objects.get(pk=gone.args[0]), by="benchmark")
                    workers.stop()
                    workers.start()
                    tally[ENGINE].runs.append(engine_run(client, plan, workers))
                for variant in PEER_VARIANTS:
                    tally[variant].runs.append(peer_run(variant, plan, workdir))
    return tallies


# ---------------------------------------------------------------- durability


def engine_durability(client, plan: list[dict]) -> dict:
    from django.conf import settings

    from executions.models import Attempt, Task
    from tests.processes import Workers

    workers = Workers(
        settings.WORKER_THREADS, {}, processes=settings.WORKER_PROCESSES, logs=harness.VAR / "logs"
    )
    workers.start()
    try:
        baseline = engine_run(client, plan, workers).makespan
        execution = harness.execution_from_plan(
            client, plan, harness.durations_of(plan), message="peers: kill"
        )
        half = len(plan) // 2
        deadline = time.monotonic() + 120
        while Attempt.objects.filter(task__execution=execution, status="succeeded").count() < half:
            assert time.monotonic() < deadline, "the DAG did not get half way"
            time.sleep(0.01)
        workers.kill_workers(signal.SIGKILL)
        killed = time.time()
        # Their messages were taken by the dead processes or are still in Redis: the reaper sends
        # them again after OPENCLAW_REQUEUE_AFTER_SEC.
        queued = Task.objects.filter(execution=execution, status="queued").count()
        workers.start_workers()
        restarted = time.time()
        status = harness.wait_terminal([execution.pk], timeout=180)[execution.pk]
    finally:
        workers.stop()
    attempts = list(
        Attempt.objects.filter(task__execution=execution).values(
            "task__key", "status", "started_at", "finished_at"
        )
    )
    done_before = {
        a["task__key"]
        for a in attempts
        if a["status"] == "succeeded" and a["finished_at"].timestamp() < killed
    }
    in_flight = {a["task__key"] for a in attempts if a["status"] == "lost"}
    after = {a["task__key"] for a in attempts if a["started_at"].timestamp() > killed}
    first, last = harness.task_window([execution.pk])
    return {
        "variant": ENGINE,
        "finished": status == "completed",
        "done_before_kill": len(done_before),
        "in_flight_at_kill": len(in_flight),
        "queued_at_kill": queued,
        "rerun_done": len(after & done_before),
        "rerun_in_flight": len(after & in_flight),
        "restart_sec": round(restarted - killed, 2),
        "first_start_after_kill_sec": round(
            min(
                (a["started_at"].timestamp() for a in attempts if a["started_at"].timestamp() > killed),
                default=0,
            )
            - killed,
            2,
        ),
        "baseline_sec": round(baseline, 2),
        "time_lost_sec": round((last - first) - baseline, 2),
        "tasks": len(plan),
    }


def _peer_child(variant: str, spec_file: Path, events: Path, checkpoint: Path, resume: bool = False):
    args = [sys.executable, "-m", "bench.peers_langgraph", variant, str(spec_file), str(events)]
    if variant == "stategraph-sqlite":
        args += ["--checkpoint", str(checkpoint), "--thread", "durability"]
    if resume and variant == "stategraph-sqlite":
        args.append("--resume")
    return subprocess.Popen(args, cwd=harness.ROOT, start_new_session=True)


def _read_events(path: Path) -> list[list[dict]]:
    """The events file as one list per process: {"kind", "task", "pool", "at"}."""
    runs: list[list[dict]] = []
    for line in path.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "process":
            runs.append([])
        elif kind in ("start", "end"):
            runs[-1].append({"kind": kind, "task": rest[0], "pool": rest[1], "at": float(rest[2])})
    return runs


def peer_durability(variant: str, plan: list[dict], workdir: Path) -> dict:
    spec_file = workdir / "durability-plan.json"
    spec_file.write_text(json.dumps({"limits": LIMITS, "tasks": peer_plan(plan)}))

    def span(events: list[dict]) -> tuple[float, float]:
        return min(e["at"] for e in events), max(e["at"] for e in events)

    # Uninterrupted, in a process of its own as well.
    events = workdir / f"{variant}-baseline.log"
    assert _peer_child(variant, spec_file, events, workdir / f"{variant}-baseline.sqlite").wait(120) == 0
    start, end = span(_read_events(events)[0])
    baseline = end - start

    events, checkpoint = workdir / f"{variant}-killed.log", workdir / f"{variant}-killed.sqlite"
    child = _peer_child(variant, spec_file, events, checkpoint)
    half = len(plan) // 2
    deadline = time.monotonic() + 120
    while not events.exists() or events.read_text().count("\nend ") < half:
        assert time.monotonic() < deadline and child.poll() is None, "the DAG did not get half way"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    killed = time.time()
    child.wait(10)
    code = _peer_child(variant, spec_file, events, checkpoint, resume=True).wait(120)
    first_run, second_run = _read_events(events)
    ended_before = {e["task"] for e in first_run if e["kind"] == "end"}
    in_flight = {e["task"] for e in first_run if e["kind"] == "start"} - ended_before
    started_after = {e["task"] for e in second_run if e["kind"] == "start"}
    ended_after = {e["task"] for e in second_run if e["kind"] == "end"}
    start, _ = span(first_run)
    _, end = span(second_run) if second_run else (0, 0)
    return {
        "variant": variant,
        "finished": code == 0 and ended_before | ended_after == {t["id"] for t in plan},
        "done_before_kill": len(ended_before),
        "in_flight_at_kill": len(in_flight),
        "rerun_done": len(started_after & ended_before),
        "rerun_in_flight": len(started_after & in_flight),
        "restart_sec": None,
        "first_start_after_kill_sec": round(min(e["at"] for e in second_run) - killed, 2)
        if second_run
        else None,
        "baseline_sec": round(baseline, 2),
        "time_lost_sec": round((end - start) - baseline, 2),
        "tasks": len(plan),
    }


def durability(client, workdir: Path) -> list[dict]:
    plan = makespan.random_dag(20, DURABILITY_SEED)
    return [
        engine_durability(client, plan),
        peer_durability("stategraph-sqlite", plan, workdir),
        peer_durability("stategraph", plan, workdir),
    ]


# ---------------------------------------------------------------- report


def _variant_label(variant: str) -> str:
    return "engine (rank dispatch, real workers)" if variant == ENGINE else PEER_VARIANTS[variant]


def _peaks_cell(peaks: dict[str, int]) -> str:
    return ", ".join(f"{pool} {peaks[pool]}/{limit}" for pool, limit in LIMITS.items())


def run(ctx) -> dict:
    try:
        import langgraph  # noqa: F401 (only its presence is checked here)
    except ImportError:
        raise RuntimeError("the peer packages are missing: run `make bench-peers`") from None
    client, _ = harness.bench_client()
    durations = {d for plan in (seed_plan(),) for d in harness.durations_of(plan).values()}
    options = {
        "latency_rules": harness.latency_rules(durations | set(makespan.DURATIONS)),
        "pm_latency_sec": 0.0,
    }
    harness.configure(LIMITS, options=options)
    with tempfile.TemporaryDirectory(prefix="openclaw-peers-") as tmp:
        workdir = Path(tmp)
        tallies = compare(ctx, client, workdir)
        kills = durability(client, workdir)

    summaries = {group: {v: t.summary() for v, t in tally.items()} for group, tally in tallies.items()}
    rows, checks = [], []
    for group, by_variant in summaries.items():
        for variant, s in by_variant.items():
            rows.append(
                [
                    group,
                    _variant_label(variant),
                    s["dags"],
                    f"{s['ratio_mean']:.3f}",
                    f"{s['ratio_p95']:.3f}",
                    ""
                    if s["vs_simulated_mean"] is None
                    else f"{s['vs_simulated_mean']:.3f} / {s['vs_simulated_p95']:.3f} "
                    f"({s['vs_simulated_measured_mean']:.3f})",
                    _peaks_cell(s["peaks"]),
                    f"{s['dags_over_a_limit']}/{s['dags']}",
                    f"{s['first_start_p50_ms']} / {s['first_start_p95_ms']}",
                ]
            )
    for n in SIZES:
        by_variant = summaries[f"random n={n}"]
        engine = by_variant[ENGINE]
        best_peer = min(by_variant[v]["ratio_mean"] for v in PEER_VARIANTS)
        best_peer_p95 = min(by_variant[v]["ratio_p95"] for v in PEER_VARIANTS)
        checks += [
            (
                f"n={n}: engine makespan/bound ≤ every peer's (mean, p95)",
                engine["ratio_mean"] <= best_peer and engine["ratio_p95"] <= best_peer_p95,
                f"engine {engine['ratio_mean']} / {engine['ratio_p95']}, "
                f"best peer {best_peer} / {best_peer_p95}",
            ),
            (
                f"n={n}: engine makespan/bound mean ≤ {TARGET_MEAN}, p95 ≤ {TARGET_P95}",
                engine["ratio_mean"] <= TARGET_MEAN and engine["ratio_p95"] <= TARGET_P95,
                f"{engine['ratio_mean']} / {engine['ratio_p95']}",
            ),
            (
                f"n={n}: engine makespan / its simulated schedule, mean ≤ {TARGET_SIM}",
                engine["vs_simulated_mean"] <= TARGET_SIM,
                engine["vs_simulated_mean"],
            ),
        ]
    broken = sum(by_variant[ENGINE]["dags_over_a_limit"] for by_variant in summaries.values())
    checks.append(("engine: no pool limit broken in any DAG", broken == 0, f"{broken} DAGs over a limit"))
    durability_rows = [
        [
            _variant_label(k["variant"]),
            "yes" if k["finished"] else "NO",
            f"{k['done_before_kill']}/{k['tasks']}",
            f"{k['in_flight_at_kill']} running"
            + (f" + {k['queued_at_kill']} queued" if k.get("queued_at_kill") is not None else ""),
            f"{k['rerun_done']} done + {k['rerun_in_flight']} in flight",
            k["first_start_after_kill_sec"],
            k["baseline_sec"],
            k["time_lost_sec"],
        ]
        for k in kills
    ]
    return {
        "title": "The engine and LangGraph on the same DAGs, limits and latencies (one unit = 10 ms)",
        "columns": [
            "DAGs",
            "variant",
            "runs",
            "makespan/bound mean",
            "p95",
            "engine / simulated mean / p95 (/ simulated on measured durations, mean)",
            "peak running / limit (max over DAGs)",
            "DAGs over a limit",
            "first task start p50 / p95 ms",
        ],
        "rows": rows,
        "tables": [
            {
                "title": f"Durability: a 20-task DAG (seed {DURABILITY_SEED}) killed (SIGKILL) once half its "
                "tasks finished, restarted at once",
                "columns": [
                    "variant",
                    "finished",
                    "done before the kill",
                    "in flight",
                    "ran again",
                    "kill → first start s",
                    "uninterrupted s",
                    "time lost s",
                ],
                "rows": durability_rows,
            }
        ],
        "checks": checks,
        "data": {"limits": LIMITS, "summaries": summaries, "durability": kills},
        "notes": [
            "makespan = first task start → last task end; bound = max(critical path, pool work / limit) "
            "from the model latencies; engine tasks also include their verification",
            "first task start: engine from creating the execution, LangGraph from ainvoke (graph built)",
            "durability, engine: the workers are killed; the reaper expires the dead attempts' leases "
            "(OPENCLAW_LEASE_SEC, production 15 s) and the tasks run again",
        ],
    }
