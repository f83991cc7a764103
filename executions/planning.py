"""Planning an execution: planning → executing (or awaiting_approval, or failed).

The PM decomposes the request into tasks and their contract (`pm_coordinator`); each task's
expected duration comes from its pool (the provider's known latency, else the pool's history); the
router picks serial or parallel from the simulated schedule (`dag`, `agent_router`); the fee is
fixed by the pricing policy (`billing`); the tasks are created and dispatched once committed. An
execution whose client approves plans (`approval: plan`) stops at `awaiting_approval` with its
plan, contract, estimates and fee until the client approves it (`approval`), and only then is
charged and started.
"""

import heapq
import logging
import statistics
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings, WorkerPool
from pools.storable import storable

from . import billing, events, pm_coordinator, projects, webhooks
from .agent_router import ParallelDisabled, choose_mode
from .dag import PlanNode, dispatch_ranks, simulate_makespan
from .dispatch import dispatch_after_commit
from .models import Attempt, Execution
from .phase_lease import PhaseLease
from .pm_coordinator import PLAN_TASK_FIELDS
from .states import ApprovalMode, AttemptStatus, ExecutionStatus
from .task_distributor import work_weights
from .task_graph import create_tasks
from .transitions import claim_phase, move_execution

log = logging.getLogger("openclaw.pm")

HISTORY_SAMPLES = 100
MIN_HISTORY = 5
PLAN_TIMEOUT_SEC = 120  # the PM call's own deadline


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
    """Serial mode: one task after another, each blocked by the previous. The order is topological
    (a task never runs before its own dependencies, hard or soft), and among the tasks whose
    dependencies are placed, by `ranks_key` (priority, then critical path)."""
    by_id = {t["id"]: t for t in plan_tasks}
    position = {t["id"]: index for index, t in enumerate(plan_tasks)}
    waiting_on = {t["id"]: set(t["blocked_by"]) | set(t["soft_deps"]) for t in plan_tasks}
    dependents: dict[str, list[str]] = {t["id"]: [] for t in plan_tasks}
    for task_id, deps in waiting_on.items():
        for dep in deps:
            dependents[dep].append(task_id)
    frontier = [(ranks_key(t), position[t["id"]], t["id"]) for t in plan_tasks if not waiting_on[t["id"]]]
    heapq.heapify(frontier)
    order = []
    while frontier:
        _, _, task_id = heapq.heappop(frontier)
        order.append(task_id)
        for child in dependents[task_id]:
            waiting_on[child].discard(task_id)
            if not waiting_on[child]:
                heapq.heappush(frontier, (ranks_key(by_id[child]), position[child], child))
    previous = None
    chained = []
    for task_id in order:
        task = by_id[task_id]
        blocked = list(task["blocked_by"])
        if previous and previous not in blocked:
            blocked.append(previous)
        chained.append({**task, "blocked_by": blocked})
        previous = task_id
    return chained


@dataclass(frozen=True)
class PlanFigures:
    """A validated plan routed and priced: what the execution runs and the client pays."""

    tasks: list[dict]  # as they run (serial mode: chained)
    mode: str
    reason: str
    expected: dict[str, float]  # seconds per task
    weights: dict[str, float]  # each task's share of the work, for refunds
    estimate: float
    serial_estimate: float
    estimated_cost: Decimal
    fee: Decimal
    ranks: dict[str, float] | None = None  # the dispatch ranks (dag.dispatch_ranks) the estimate assumed
    fee_description: str = ""  # the ledger's words for the fee: the policy it was priced by
    # The pools as the plan was routed and estimated against them; the tasks take their roles and
    # retries from these (None: read when the tasks are created).
    pools: dict[str, WorkerPool] | None = field(default=None, compare=False, repr=False)

    def record(self, *, model: str = "", model_fallback: str = "") -> dict:
        """The execution's `plan` column: enough to start the plan later exactly as priced now."""
        return {
            "tasks": self.tasks,
            "expected": self.expected,
            "weights": self.weights,
            "ranks": self.ranks,
            "fee_description": self.fee_description,
            "model": model,
            "model_fallback": model_fallback,
        }

    @classmethod
    def from_record(cls, execution: Execution) -> "PlanFigures":
        """The figures an execution awaiting approval was quoted (its plan unedited)."""
        plan = execution.plan
        return cls(
            tasks=plan["tasks"],
            mode=execution.mode,
            reason=execution.routing_reason,
            expected=plan["expected"],
            weights=plan["weights"],
            estimate=execution.estimated_duration_sec or 0.0,
            serial_estimate=execution.serial_estimate_sec or 0.0,
            estimated_cost=execution.estimated_cost_usd or Decimal("0"),
            fee=execution.quoted_fee_usd or Decimal("0"),
            ranks=plan.get("ranks"),
            fee_description=plan.get("fee_description", ""),
        )


def plan_figures(
    execution: Execution, plan_tasks: list[dict], *, planning: list = (), engine: EngineSettings | None = None
) -> PlanFigures:
    """Route a validated plan (serial or parallel), estimate its duration and cost, and fix its fee.
    Raises ParallelDisabled when nothing may run it."""
    engine = engine or EngineSettings.current()
    pools = {p.name: p for p in WorkerPool.objects.select_related("model")}
    expected = expected_durations(plan_tasks, pools, execution.message)
    nodes = [
        PlanNode(t["id"], t["pool"], expected[t["id"]], t["priority"], tuple(t["blocked_by"]))
        for t in plan_tasks
    ]
    concurrency = {name: pool.max_concurrent for name, pool in pools.items()}
    ranks = dispatch_ranks(nodes, concurrency)
    parallel_estimate = simulate_makespan(nodes, concurrency, ranks=ranks)
    serial_estimate = sum(expected.values())
    route = choose_mode(
        requested=execution.requested_mode,
        force_parallel=execution.force_parallel,
        enabled=engine.enabled,
        auto_fallback_to_serial=engine.auto_fallback_to_serial,
        task_count=len(plan_tasks),
        serial_estimate=serial_estimate,
        parallel_estimate=parallel_estimate,
    )
    if route.mode == "serial":
        plan_tasks = serialize_plan(plan_tasks, lambda t: (t["priority"], -ranks[t["id"]]))
        estimate = serial_estimate
    else:
        estimate = parallel_estimate
    weights = work_weights(execution.message, plan_tasks, {name: pool.role for name, pool in pools.items()})
    estimated_cost = billing.plan_cost_estimate(plan_tasks, planning=list(planning))
    fee, fee_description = billing.plan_fee(task_count=len(plan_tasks), estimated_cost=estimated_cost)
    return PlanFigures(
        tasks=plan_tasks,
        mode=route.mode,
        reason=route.reason,
        expected=expected,
        weights=weights,
        ranks=ranks,
        estimate=estimate,
        serial_estimate=serial_estimate,
        estimated_cost=estimated_cost,
        fee=fee,
        fee_description=fee_description,
        pools=pools,
    )


def execution_plan(execution_id: str) -> bool:
    """planning → executing: decompose through the PM model, route, estimate, fix the fee, dispatch.

    The worker renews the phase's lease while it plans (`phase_lease`), so a resent message does not
    plan twice at once and a killed worker is replaced within one lease. Every PM call is billed,
    whether this worker's plan is the one kept, the execution was cancelled meanwhile, or planning
    failed; any error ends it `failed` with the reason rather than leaving it to be planned again
    and again."""
    claim = claim_phase(execution_id, ExecutionStatus.PLANNING, lease_sec=settings.OPENCLAW_LEASE_SEC)
    if claim is None:
        return False
    execution = Execution.objects.get(pk=execution_id)
    calls: list = []  # (spec, completion) of every PM call made, billed whatever the outcome
    with PhaseLease(execution_id, ExecutionStatus.PLANNING, claim):
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
    engine = EngineSettings.current()
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
        existing_contract=base.contract,
    )
    calls.extend(result.completions)
    try:
        figures = plan_figures(execution, result.tasks, planning=result.completions, engine=engine)
    except ParallelDisabled as exc:
        return execution_fail_planning(execution, str(exc))
    model = {"model": spec.label, "model_fallback": spec.fallback_reason}
    if execution.approval == ApprovalMode.PLAN:
        started = _await_approval(execution, claim, calls, result, figures, model, base.commit)
    else:
        with transaction.atomic():
            started = execution_start(
                execution,
                figures,
                expected=ExecutionStatus.PLANNING,
                model=model,
                before=lambda: bill_planning(execution, claim, calls),
                plan_source=result.source,
                plan_notes=result.notes,
                contract=result.contract,
                contract_amendment=result.amendment,
                base_commit=base.commit,
            )
    if started:
        log.info(
            "PM Decomposed %s into %d tasks (%s, %s plan): estimate %.1fs vs serial %.1fs%s",
            execution.pk,
            len(figures.tasks),
            figures.mode,
            result.source,
            figures.estimate,
            figures.serial_estimate,
            ", awaiting approval" if execution.approval == ApprovalMode.PLAN else "",
        )
    return started


def _figures_fields(figures: PlanFigures, model: dict) -> dict:
    return {
        "mode": figures.mode,
        "routing_reason": figures.reason,
        "plan": figures.record(**model),
        "estimated_duration_sec": round(figures.estimate, 3),
        "serial_estimate_sec": round(figures.serial_estimate, 3),
        "estimated_cost_usd": figures.estimated_cost,
    }


def _figures_payload(figures: PlanFigures, tasks: list[dict], model: dict, **extra) -> dict:
    return {
        "mode": figures.mode,
        "reason": figures.reason,
        **extra,
        "tasks": tasks,
        "estimated_duration_sec": round(figures.estimate, 3),
        "serial_estimate_sec": round(figures.serial_estimate, 3),
        "fee_usd": str(figures.fee),
        "estimated_cost_usd": str(figures.estimated_cost),
        **model,
    }


def _await_approval(
    execution: Execution, claim: int, calls: list, result, figures: PlanFigures, model: dict, base_commit: str
) -> bool:
    """planning → awaiting_approval: the plan, its estimates and its fee wait for the client; no
    task exists yet, so nothing can be dispatched, and no fee is charged."""
    now = timezone.now()
    expires = now + timedelta(hours=settings.OPENCLAW_APPROVAL_TTL_HOURS)
    with transaction.atomic():
        if not move_execution(
            execution.pk,
            ExecutionStatus.PLANNING,
            ExecutionStatus.AWAITING_APPROVAL,
            **_figures_fields(figures, model),
            plan_source=result.source,
            plan_notes=result.notes,
            quoted_fee_usd=figures.fee,
            approval_expires_at=expires,
            contract=result.contract,
            contract_amendment=result.amendment,
            base_commit=base_commit,
            phase_lease_until=None,
            phase_claims=0,
        ):
            return False
        bill_planning(execution, claim, calls)
        events.emit(
            execution.pk,
            "execution.awaiting_approval",
            payload=_figures_payload(
                figures,
                [
                    {**{k: t[k] for k in PLAN_TASK_FIELDS}, "expected_sec": figures.expected[t["id"]]}
                    for t in figures.tasks
                ],
                model,
                plan_source=result.source,
                notes=result.notes,
                contract=result.contract,
                contract_source=result.contract_source,
                expires_at=expires.isoformat(),
            ),
        )
        webhooks.webhook_delivery_create(execution=execution, status=ExecutionStatus.AWAITING_APPROVAL)
    return True


def execution_start(
    execution: Execution,
    figures: PlanFigures,
    *,
    expected: str,
    model: dict,
    before=None,
    **fields,
) -> bool:
    """expected (planning, awaiting_approval) → executing: the fee charged, the tasks created and
    dispatched once committed. Call inside a transaction; `before` runs once the move is won."""
    execution_id = execution.pk
    changes = {
        **_figures_fields(figures, model),
        "started_at": timezone.now(),
        "phase_lease_until": None,
        "phase_claims": 0,
        **fields,
    }
    if not move_execution(execution_id, expected, ExecutionStatus.EXECUTING, **changes):
        return False
    # What the move wrote, on the caller's copy (no read back inside the write lock).
    for name, value in {"status": ExecutionStatus.EXECUTING, **changes}.items():
        setattr(execution, name, value)
    if before is not None:
        before()
    billing.charge_fee(execution, figures.fee, figures.fee_description)
    created = create_tasks(
        execution,
        figures.tasks,
        expected=figures.expected,
        weights=figures.weights,
        ranks=figures.ranks,
        pools=figures.pools,
    )
    events.emit(
        execution_id,
        "execution.planned",
        payload=_figures_payload(
            figures,
            [
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
            model,
            plan_source=execution.plan_source,
            notes=execution.plan_notes,
            contract=execution.contract,
        ),
    )
    dispatch_after_commit(t.pool for t in created)
    return True


def execution_fail_planning(execution: Execution, reason: str) -> bool:
    reason = storable(reason)  # it may quote the PM model's server
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
        webhooks.webhook_delivery_create(execution=execution, status=ExecutionStatus.FAILED)
    return True
