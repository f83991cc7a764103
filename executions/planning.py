"""Planning an execution: planning → executing (or failed).

The PM decomposes the request (`pm_coordinator`); each task's expected duration comes from its
pool (the provider's known latency, else the pool's history); the router picks serial or parallel
from the simulated schedule (`dag`, `agent_router`); the fee is fixed by the pricing policy
(`billing`); the tasks are created and dispatched once committed.
"""

import logging
import statistics

from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings, WorkerPool

from . import billing, events, pm_coordinator, projects
from .agent_router import ParallelDisabled, choose_mode
from .dag import PlanNode, simulate_makespan, upward_ranks
from .dispatch import dispatch_after_commit
from .models import Attempt, Execution
from .states import AttemptStatus, ExecutionStatus
from .task_distributor import work_weights
from .task_graph import create_tasks
from .transitions import claim_phase, move_execution

log = logging.getLogger("openclaw.pm")

HISTORY_SAMPLES = 100
MIN_HISTORY = 5
PLAN_TIMEOUT_SEC = 120  # the PM call's own deadline
LEASE_GRACE_SEC = 30  # beyond it, before another worker may take the phase


def pool_limits() -> dict[str, pm_coordinator.PoolLimits]:
    return {
        p.name: pm_coordinator.PoolLimits(p.timeout_sec, p.enabled, p.role) for p in WorkerPool.objects.all()
    }


def expected_durations(
    plan_tasks: list[dict], pools: dict[str, WorkerPool], request: str
) -> dict[str, float]:
    """Expected seconds per task: the latency the pool's provider knows (the offline one does), the
    pool's observed median duration, the plan's own estimate, or a quarter of the timeout, in
    that order."""
    medians: dict[str, float | None] = {}

    def median_of(name: str) -> float | None:
        # Read the history only for pools that need it (offline pools know their latency).
        if name not in medians:
            durations = [
                (a.finished_at - a.started_at).total_seconds()
                for a in Attempt.objects.filter(task__pool=name, status=AttemptStatus.SUCCEEDED)
                .order_by("-finished_at")
                .only("started_at", "finished_at")[:HISTORY_SAMPLES]
            ]
            medians[name] = statistics.median(durations) if len(durations) >= MIN_HISTORY else None
        return medians[name]

    expected = {}
    for task in plan_tasks:
        pool = pools.get(task["pool"])
        spec = llm.resolve(pool.model if pool else None)
        known = (
            llm.expected_latency(
                spec,
                llm.LLMRequest(
                    purpose="agent",
                    system="",
                    prompt="",
                    timeout=task["timeout_sec"],
                    pool=task["pool"],
                    role=pool.role,
                    meta={"description": task["description"], "pool_latency_sec": pool.offline_latency_sec},
                ),
            )
            if pool is not None
            else None
        )
        if known is not None:
            expected[task["id"]] = known
        elif median_of(task["pool"]) is not None:
            expected[task["id"]] = medians[task["pool"]]
        else:
            expected[task["id"]] = float(task["context"].get("estimate_sec") or task["timeout_sec"] / 4)
    return expected


def serialize_plan(plan_tasks: list[dict], ranks_key) -> list[dict]:
    """Serial mode: one task after another (priority, then critical path), each blocked by the previous."""
    ordered = sorted(plan_tasks, key=ranks_key)
    previous = None
    chained = []
    for task in ordered:
        blocked = list(task["blocked_by"])
        if previous and previous not in blocked:
            blocked.append(previous)
        chained.append({**task, "blocked_by": blocked})
        previous = task["id"]
    return chained


def execution_plan(execution_id: str) -> bool:
    """planning → executing: decompose through the PM model, route, estimate, fix the fee, dispatch.

    The worker holds the phase's lease for the length of the PM call, so a resent message does not
    plan twice at once. Every PM call is billed, whether this worker's plan is the one kept, the
    execution was cancelled meanwhile, or planning failed; any error ends it `failed` with the
    reason rather than leaving it to be planned again and again."""
    claim = claim_phase(execution_id, ExecutionStatus.PLANNING, lease_sec=PLAN_TIMEOUT_SEC + LEASE_GRACE_SEC)
    if claim is None:
        return False
    execution = Execution.objects.get(pk=execution_id)
    calls: list = []  # (spec, completion) of every PM call made, billed whatever the outcome
    try:
        return _plan(execution, claim, calls)
    except Exception as exc:
        log.exception("planning %s failed", execution_id)
        return execution_fail_planning(execution, f"planning failed: {type(exc).__name__}: {exc}"[:500])
    finally:
        bill_planning(execution, claim, calls)


def bill_planning(execution: Execution, claim: int, calls: list) -> None:
    """The PM calls of this claim on the ledger, once each (their keys make a second call a no-op)."""
    with transaction.atomic():
        for index, (used_spec, completion) in enumerate(calls):
            n = billing.phase_call_index(claim, execution.retries, index)
            billing.record_phase_usage(execution, "plan", n, used_spec, completion)


def _plan(execution: Execution, claim: int, calls: list) -> bool:
    execution_id = execution.pk
    engine = EngineSettings.current()
    pools = {p.name: p for p in WorkerPool.objects.select_related("model")}
    limits = pool_limits()
    spec = llm.resolve(engine.pm_model)
    # A follow-up is planned against the project's current tree, and its tasks start from it.
    base = projects.plan_base(execution) if execution.project else projects.Base("", [])
    result = pm_coordinator.decompose(
        execution.message,
        spec,
        limits,
        max_tasks=engine.max_tasks_per_plan,
        timeout=PLAN_TIMEOUT_SEC,
        existing_files=base.files,
    )
    calls.extend(result.completions)
    plan_tasks = result.tasks
    expected = expected_durations(plan_tasks, pools, execution.message)
    nodes = [
        PlanNode(t["id"], t["pool"], expected[t["id"]], t["priority"], tuple(t["blocked_by"]))
        for t in plan_tasks
    ]
    concurrency = {name: pool.max_concurrent for name, pool in pools.items()}
    parallel_estimate = simulate_makespan(nodes, concurrency)
    serial_estimate = sum(expected.values())
    try:
        route = choose_mode(
            requested=execution.requested_mode,
            force_parallel=execution.force_parallel,
            enabled=engine.enabled,
            auto_fallback_to_serial=engine.auto_fallback_to_serial,
            task_count=len(plan_tasks),
            serial_estimate=serial_estimate,
            parallel_estimate=parallel_estimate,
        )
    except ParallelDisabled as exc:
        return execution_fail_planning(execution, str(exc))
    if route.mode == "serial":
        ranks = upward_ranks(nodes)
        plan_tasks = serialize_plan(plan_tasks, lambda t: (t["priority"], -ranks[t["id"]]))
        estimate = serial_estimate
    else:
        estimate = parallel_estimate
    weights = work_weights(execution.message, plan_tasks, {name: pool.role for name, pool in pools.items()})
    estimated_cost = billing.plan_cost_estimate(plan_tasks, planning=result.completions)
    fee = billing.fee_for_plan(task_count=len(plan_tasks), estimated_cost=estimated_cost)
    now = timezone.now()
    with transaction.atomic():
        if not move_execution(
            execution_id,
            ExecutionStatus.PLANNING,
            ExecutionStatus.EXECUTING,
            mode=route.mode,
            routing_reason=route.reason,
            plan={"tasks": plan_tasks},
            plan_source=result.source,
            plan_notes=result.notes,
            base_commit=base.commit,
            estimated_duration_sec=round(estimate, 3),
            serial_estimate_sec=round(serial_estimate, 3),
            estimated_cost_usd=estimated_cost,
            started_at=now,
            phase_lease_until=None,
            phase_claims=0,
        ):
            return False
        execution.refresh_from_db()
        bill_planning(execution, claim, calls)
        billing.charge_fee(execution, fee)
        created = create_tasks(execution, plan_tasks, expected=expected, weights=weights)
        events.emit(
            execution_id,
            "execution.planned",
            payload={
                "mode": route.mode,
                "reason": route.reason,
                "plan_source": result.source,
                "notes": result.notes,
                "tasks": [
                    {
                        "id": t.key,
                        "pool": t.pool,
                        "description": t.description,
                        "blocked_by": t.blocked_by,
                        "soft_deps": t.soft_deps,
                        "expected_sec": t.expected_sec,
                    }
                    for t in created
                ],
                "estimated_duration_sec": round(estimate, 3),
                "serial_estimate_sec": round(serial_estimate, 3),
                "fee_usd": str(fee),
                "estimated_cost_usd": str(estimated_cost),
                "model": spec.label,
                "model_fallback": spec.fallback_reason,
            },
        )
        dispatch_after_commit(t.pool for t in created)
    log.info(
        "PM Decomposed %s into %d tasks (%s, %s plan): estimate %.1fs vs serial %.1fs",
        execution_id,
        len(plan_tasks),
        route.mode,
        result.source,
        estimate,
        serial_estimate,
    )
    return True


def execution_fail_planning(execution: Execution, reason: str) -> bool:
    with transaction.atomic():
        if not move_execution(
            execution.pk,
            ExecutionStatus.PLANNING,
            ExecutionStatus.FAILED,
            error=reason,
            finished_at=timezone.now(),
            final_response=f"The request could not be planned: {reason}",
        ):
            return False
        events.emit(execution.pk, "execution.finished", payload={"status": "failed", "error": reason})
    return True
