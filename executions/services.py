"""Services: every mutation of an execution from the outside (API, console, Slack, CLI)."""

import logging
import statistics
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from pools import llm
from pools.models import EngineSettings, WorkerPool
from pools.offline import latency_for

from . import billing, events, pm_coordinator
from .agent_router import ParallelDisabled, choose_mode
from .models import Attempt, Client, Execution, ExecutionStatus, Task, TaskStatus
from .parallel_executor import (
    PlanNode,
    block_dependents,
    cas_execution,
    create_tasks,
    dispatch_after_commit,
    lock_execution,
    maybe_finish_work,
    simulate_makespan,
)

log = logging.getLogger("openclaw.pm")

HISTORY_SAMPLES = 100
MIN_HISTORY = 5


def execution_create(
    *,
    client: Client,
    message: str,
    session_key: str,
    project: str = "",
    mode: str = "auto",
    force_parallel: bool = False,
    budget_usd: Decimal | None = None,
) -> Execution:
    """Store a new request and queue its planning on the control queue."""
    from .tasks import plan_execution

    if budget_usd is None:
        budget_usd = client.default_budget_usd
    now = timezone.now()
    with transaction.atomic():
        execution = Execution.objects.create(
            id=Execution.new_id(session_key),
            client=client,
            session_key=session_key,
            project=project,
            message=message,
            requested_mode=mode,
            force_parallel=force_parallel,
            budget_usd=budget_usd,
            phase_sent_at=now,
        )
        events.emit(execution.pk, "execution.created", payload={"mode": mode, "project": project})
        transaction.on_commit(lambda: plan_execution.send(execution.pk))
    log.info("PM Received %s from %s: %r", execution.pk, client.name, message[:80])
    return execution


def pool_limits() -> dict[str, pm_coordinator.PoolLimits]:
    return {p.name: pm_coordinator.PoolLimits(p.timeout_sec, p.enabled) for p in WorkerPool.objects.all()}


def expected_durations(
    plan_tasks: list[dict], pools: dict[str, WorkerPool], request: str
) -> dict[str, float]:
    """Expected seconds per task: the offline model's known latency, the pool's observed median
    duration, the plan's own estimate, or a quarter of the timeout, in that order."""
    medians: dict[str, float | None] = {}

    def median_of(name: str) -> float | None:
        # Read the history only for pools that need it (offline pools know their latency).
        if name not in medians:
            durations = [
                (a.finished_at - a.started_at).total_seconds()
                for a in Attempt.objects.filter(task__pool=name, status="succeeded")
                .order_by("-finished_at")
                .only("started_at", "finished_at")[:HISTORY_SAMPLES]
            ]
            medians[name] = statistics.median(durations) if len(durations) >= MIN_HISTORY else None
        return medians[name]

    expected = {}
    for task in plan_tasks:
        pool = pools.get(task["pool"])
        spec = llm.resolve(pool.model if pool else None)
        if spec.provider == "offline" and pool is not None:
            expected[task["id"]] = latency_for(
                spec,
                llm.LLMRequest(
                    purpose="agent",
                    system="",
                    prompt="",
                    timeout=task["timeout_sec"],
                    pool=task["pool"],
                    meta={"description": task["description"], "pool_latency_sec": pool.offline_latency_sec},
                ),
            )
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
    """planning → executing: decompose through the PM model, route, estimate, fix the fee, dispatch."""
    execution = Execution.objects.get(pk=execution_id)
    if execution.status != ExecutionStatus.PLANNING:
        return False
    engine = EngineSettings.current()
    pools = {p.name: p for p in WorkerPool.objects.select_related("model")}
    limits = pool_limits()
    spec = llm.resolve(engine.pm_model)
    result = pm_coordinator.decompose(
        execution.message, spec, limits, max_tasks=engine.max_tasks_per_plan, timeout=120
    )
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
        from .parallel_executor import upward_ranks

        ranks = upward_ranks(nodes)
        plan_tasks = serialize_plan(plan_tasks, lambda t: (t["priority"], -ranks[t["id"]]))
        estimate = serial_estimate
    else:
        estimate = parallel_estimate
    weights = {t["id"]: float(t["context"].get("estimate_sec") or expected[t["id"]]) for t in plan_tasks}
    estimated_cost = billing.plan_cost_estimate(plan_tasks, planning=result.completions)
    fee = billing.fee_for_plan(task_count=len(plan_tasks), estimated_cost=estimated_cost)
    now = timezone.now()
    with transaction.atomic():
        if not cas_execution(
            execution_id,
            ExecutionStatus.PLANNING,
            status=ExecutionStatus.EXECUTING,
            mode=route.mode,
            routing_reason=route.reason,
            plan={"tasks": plan_tasks},
            plan_source=result.source,
            plan_notes=result.notes,
            estimated_duration_sec=round(estimate, 3),
            serial_estimate_sec=round(serial_estimate, 3),
            estimated_cost_usd=estimated_cost,
            started_at=now,
        ):
            return False
        execution.refresh_from_db()
        for index, (used_spec, completion) in enumerate(result.completions):
            billing.record_phase_usage(execution, "plan", index, used_spec, completion)
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
        if not cas_execution(
            execution.pk,
            ExecutionStatus.PLANNING,
            status=ExecutionStatus.FAILED,
            error=reason,
            finished_at=timezone.now(),
            final_response=f"The request could not be planned: {reason}",
        ):
            return False
        events.emit(execution.pk, "execution.finished", payload={"status": "failed", "error": reason})
    return True


OPEN_TASK_STATES = [
    TaskStatus.PENDING,
    TaskStatus.READY,
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.FAILED,
]


def execution_cancel(execution: Execution, *, by: str = "client") -> bool:
    """Cancel: no new task starts; running attempts are abandoned (their tokens are still billed)."""
    from .result_aggregator import finish

    now = timezone.now()
    with transaction.atomic():
        lock_execution(execution.pk)
        live = [ExecutionStatus.PLANNING, ExecutionStatus.EXECUTING, ExecutionStatus.AGGREGATING]
        current = (
            Execution.objects.filter(pk=execution.pk, status__in=live)
            .values_list("status", flat=True)
            .first()
        )
        if current is None:
            return False
        tasks = list(Task.objects.filter(execution=execution, status__in=OPEN_TASK_STATES))
        for task in tasks:
            if Task.objects.filter(pk=task.pk, status=task.status).update(
                status=TaskStatus.CANCELLED, finished_at=now, error=f"cancelled by {by}"
            ):
                Attempt.objects.filter(task=task, status="running").update(
                    status="cancelled", finished_at=now
                )
                events.emit(execution.pk, "task.cancelled", task_key=task.key)
        dispatch_after_commit({t.pool for t in tasks})
        execution.refresh_from_db()
        return (
            finish(
                execution,
                ExecutionStatus.CANCELLED,
                response=f"Cancelled by {by}.",
                quality=None,
                expected=current,
            )
            is not None
        )


def execution_retry(execution: Execution) -> int:
    """Give dead and blocked tasks a new chance; returns how many tasks were reopened."""
    now = timezone.now()
    with transaction.atomic():
        lock_execution(execution.pk)
        if not cas_execution(
            execution.pk,
            [ExecutionStatus.PARTIAL, ExecutionStatus.FAILED],
            status=ExecutionStatus.EXECUTING,
            finished_at=None,
            final_response="",
            quality_score=None,
        ):
            return 0
        reopened = 0
        for task in Task.objects.filter(
            execution=execution, status__in=[TaskStatus.DEAD, TaskStatus.BLOCKED]
        ):
            target = (
                TaskStatus.READY
                if task.status == TaskStatus.DEAD or not task.blocked_by
                else TaskStatus.PENDING
            )
            if Task.objects.filter(pk=task.pk, status=task.status).update(
                status=target,
                failed_attempts=0,
                not_before=None,
                error="",
                finished_at=None,
                progress=0,
                ready_at=now if target == TaskStatus.READY else None,
            ):
                reopened += 1
                events.emit(
                    execution.pk, "task.retry_requested", task_key=task.key, payload={"status": target}
                )
        events.emit(execution.pk, "execution.retrying", payload={"tasks": reopened})
        from .parallel_executor import promote_dependents

        pools = promote_dependents(execution.pk) | set(
            Task.objects.filter(execution=execution, status=TaskStatus.READY).values_list("pool", flat=True)
        )
        block_dependents(execution.pk)
        dispatch_after_commit(pools)
        maybe_finish_work(execution.pk)
    return reopened
