"""The scheduler: the database is the truth, Dramatiq the transport.

Every transition is a compare-and-set (`UPDATE … WHERE status = <expected>`); a duplicate or late
message changes nothing. Admission control counts a pool's queued+running tasks while holding the
pool's row, so `max_concurrent` holds across every worker host. Among ready tasks, dispatch
prefers the lower priority number, then the longer remaining critical path (upward rank).
"""

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from pools.models import WorkerPool, pool_queue_name

from . import events, hot_updates
from .models import Attempt, Execution, ExecutionStatus, Task, TaskStatus

log = logging.getLogger("openclaw.scheduler")


# ---------------------------------------------------------------- pure scheduling logic


@dataclass
class PlanNode:
    key: str
    pool: str
    duration: float
    priority: int = 1
    blocked_by: tuple[str, ...] = ()


def upward_ranks(nodes: Iterable[PlanNode]) -> dict[str, float]:
    """rank(t) = duration(t) + max rank of the tasks that wait on t (the critical path from t)."""
    nodes = {n.key: n for n in nodes}
    children: dict[str, list[str]] = {key: [] for key in nodes}
    for node in nodes.values():
        for dep in node.blocked_by:
            children[dep].append(node.key)
    ranks: dict[str, float] = {}
    for key in topological_order(nodes.values())[::-1]:
        ranks[key] = nodes[key].duration + max((ranks[c] for c in children[key]), default=0.0)
    return ranks


def topological_order(nodes: Iterable[PlanNode]) -> list[str]:
    nodes = list(nodes)
    pending = {n.key: len(n.blocked_by) for n in nodes}
    waiting: dict[str, list[str]] = {n.key: [] for n in nodes}
    for n in nodes:
        for dep in n.blocked_by:
            waiting[dep].append(n.key)
    order = []
    frontier = [n.key for n in nodes if not n.blocked_by]
    while frontier:
        key = frontier.pop(0)
        order.append(key)
        for child in waiting[key]:
            pending[child] -= 1
            if pending[child] == 0:
                frontier.append(child)
    if len(order) != len(nodes):
        raise ValueError("the plan has a dependency cycle")
    return order


def simulate_makespan(nodes: list[PlanNode], limits: dict[str, int], *, policy: str = "rank") -> float:
    """List-schedule the DAG on pools with their limits; the makespan the dispatcher would reach.

    `policy` is "rank" (the dispatcher's rule) or "fifo" (ready order), for comparisons.
    """
    ranks = upward_ranks(nodes)
    by_key = {n.key: n for n in nodes}
    remaining = {n.key: len(n.blocked_by) for n in nodes}
    waiting: dict[str, list[str]] = {n.key: [] for n in nodes}
    for n in nodes:
        for dep in n.blocked_by:
            waiting[dep].append(n.key)
    ready: dict[str, list] = {}
    counter = 0

    def make_ready(key: str) -> None:
        nonlocal counter
        counter += 1
        node = by_key[key]
        sort_key = (node.priority, -ranks[key], counter) if policy == "rank" else (counter,)
        heapq.heappush(ready.setdefault(node.pool, []), (sort_key, key))

    for n in nodes:
        if not n.blocked_by:
            make_ready(n.key)
    running: list[tuple[float, str]] = []
    busy = dict.fromkeys(limits, 0)
    now = 0.0
    while True:
        for pool, heap in ready.items():
            while heap and busy.get(pool, 0) < limits.get(pool, 1):
                _, key = heapq.heappop(heap)
                busy[pool] = busy.get(pool, 0) + 1
                heapq.heappush(running, (now + by_key[key].duration, key))
        if not running:
            return now
        now, key = heapq.heappop(running)
        busy[by_key[key].pool] -= 1
        for child in waiting[key]:
            remaining[child] -= 1
            if remaining[child] == 0:
                make_ready(child)


def lower_bound(nodes: list[PlanNode], limits: dict[str, int]) -> float:
    """max(critical path, max over pools of total work / max_concurrent)."""
    critical = max(upward_ranks(nodes).values(), default=0.0)
    work: dict[str, float] = {}
    for n in nodes:
        work[n.pool] = work.get(n.pool, 0.0) + n.duration
    return max([critical] + [w / max(1, limits.get(p, 1)) for p, w in work.items()])


# ---------------------------------------------------------------- transitions


def cas_task(task_id: int, expected: str | Iterable[str], *, add: dict | None = None, **changes) -> bool:
    """Compare-and-set a task's status (and other fields, and amounts `add`ed to its totals); True
    when this caller won."""
    allowed = [expected] if isinstance(expected, str) else list(expected)
    return hot_updates.update(Task, {"pk": task_id, "status": allowed}, assign=changes, add=add) == 1


def attempt_to_close(attempt_id) -> Attempt:
    """An attempt with its task and what billing its usage needs (`client_id`)."""
    return (
        Attempt.objects.select_related("task")
        .annotate(client_id=F("task__execution__client_id"))
        .get(pk=attempt_id)
    )


def close_attempt(attempt: Attempt, usage, **changes) -> bool:
    """running → its outcome (`changes`), with its usage (a `billing.AttemptUsage`, or None) stored
    and charged; True when this caller closed it. An attempt closed first by someone else (the
    reaper, an earlier report) stays as it is, but its tokens were spent: they are charged as a
    late report, once. The caller holds the execution's lock and adds `usage.task_increments()`
    (amounts to add) to its task's update."""
    from . import billing

    if not hot_updates.update(
        Attempt,
        {"pk": attempt.pk, "status": "running"},
        assign={**changes, **(usage.attempt_fields() if usage else {})},
    ):
        if usage is not None:
            billing.record_usage(attempt, usage.spec, usage.completion)
        return False
    if usage is not None:
        billing.charge_closed_attempt(attempt, usage, attempt.client_id)
    return True


def lock_execution(execution_id: str) -> None:
    """Take the execution's row lock first in every transaction that changes its tasks.

    One lock order (pool → execution → task → attempt) keeps PostgreSQL free of deadlocks
    between, say, a cancel and a worker reporting a result. SQLite has no row locks and needs
    none: its writing transactions run one at a time.
    """
    lock_executions([execution_id])


def lock_executions(execution_ids: Iterable[str]) -> None:
    """`lock_execution` for several executions, in one statement that locks them in id order (the
    global order that keeps two dispatchers taking them from deadlocking)."""
    execution_ids = sorted(set(execution_ids))
    if not connection.features.has_select_for_update or not execution_ids:
        return
    with connection.cursor() as cursor:  # every transition takes it: SQL, not the ORM's compiling
        cursor.execute(
            f'SELECT "id" FROM {hot_updates.table(Execution)} WHERE "id" IN'
            f' ({", ".join(["%s"] * len(execution_ids))}) ORDER BY "id" FOR UPDATE',
            execution_ids,
        )
        cursor.fetchall()


def cas_execution(execution_id: str, expected: str | Iterable[str], **changes) -> bool:
    allowed = [expected] if isinstance(expected, str) else list(expected)
    return Execution.objects.filter(pk=execution_id, status__in=allowed).update(**changes) == 1


# Among a pool's ready tasks (t) of executing executions (e). "rank" is the index
# task_dispatch_order's: ties go to the task planned first (the lower id). "fifo" is for benchmarks
# only: see OPENCLAW_DISPATCH_ORDER.
DISPATCH_ORDER = {
    "rank": 't."priority", t."rank" DESC, t."id"',
    "fifo": 't."ready_at", t."id"',
}


def dispatch_ready_tasks(pool_name: str) -> int:
    """Queue as many ready tasks of a pool as it has free slots; returns how many were queued."""
    return dispatch_ready_pools([pool_name])


def dispatch_ready_pools(pool_names: Iterable[str]) -> int:
    """`dispatch_ready_tasks` for several pools (one transaction each); returns how many were queued.

    Most calls find nothing to do (a slot freed in a pool without ready work, the reaper's pass):
    one plain read then, no pool lock and, on SQLite, no write lock. A task that becomes ready
    meanwhile is dispatched by its own commit or the reaper's next pass.
    """
    pool_names = set(pool_names)
    if not pool_names:  # a success that queued its dependents itself: nothing left, not even a query to build
        return 0
    ready = set(
        Task.objects.filter(pool__in=pool_names, status=TaskStatus.READY)
        .order_by()
        .values_list("pool", flat=True)
        .distinct()
    )
    return sum(_dispatch_pool(pool_name) for pool_name in sorted(ready))


def _dispatch_pool(
    pool_name: str, *, within_execution: str | None = None, held_limits: dict[str, int | None] | None = None
) -> int | None:
    """Queue a pool's ready tasks into its free slots, in dispatch order; returns how many.

    `within_execution`: called inside that execution's transition, its lock held, to queue the tasks
    the transition just made ready without a transaction of their own (which would wait for its
    turn at the write lock again, on the critical path). It never waits for a lock there, so the
    lock order holds: when another transaction holds the pool's row (PostgreSQL), when the first
    ready tasks include another execution's, or when the budget refuses a task, it returns None
    and the caller dispatches the pool after commit. `held_limits`: the limits of the pools whose
    rows the transaction locked already (None for a disabled pool), read with their locks.
    """
    from pools.tasks import send_run_task

    within = within_execution is not None
    now = timezone.now()
    sent: list[tuple[int, int, str, str]] = []  # (task id, dispatch number, execution id, key)
    over_budget: set[str] = set()
    with transaction.atomic(savepoint=not within):
        if held_limits is not None and pool_name in held_limits:
            max_concurrent = held_limits[pool_name]
        else:
            max_concurrent = (
                WorkerPool.objects.select_for_update(skip_locked=within)
                .filter(name=pool_name, enabled=True)
                .values_list("max_concurrent", flat=True)
                .first()
            )
        if max_concurrent is None:
            return None if within else 0
        active, candidates = admission(pool_name, now, limit=max_concurrent * 2)
        free = max_concurrent - active
        if free <= 0 or not candidates:
            return 0
        candidates = candidates[: free * 2]
        if within and any(c[1] != within_execution for c in candidates[:free]):
            return None
        # Execution rows in one global order, so two pools dispatching at once cannot deadlock.
        # Within an execution's transition, its row (the only one queued here) is held already.
        if not within:
            lock_executions({c[1] for c in candidates})
        chosen: list[tuple] = []
        for candidate in candidates:
            _, execution_id, _, has_budget = candidate
            if len(sent) + len(chosen) >= free or (within and execution_id != within_execution):
                break
            if execution_id in over_budget:
                continue
            # Most executions have no budget: the candidate's row says so, no query. The budget
            # counts the execution's queued tasks, so those chosen so far are queued first.
            if has_budget:
                sent += _queue(chosen, now)
                chosen = []
                if not budget_allows(execution_id, pool_name):
                    over_budget.add(execution_id)
                    continue
            chosen.append(candidate)
        sent += _queue(chosen, now)
        # Registered before the events: once committed, the messages go out first.
        queue = pool_queue_name(pool_name)
        for task_id, dispatch_no, _, _ in sent:
            transaction.on_commit(lambda t=task_id, d=dispatch_no: send_run_task(t, d, queue))
        queued: dict[str, list] = {}
        for _, _, execution_id, key in sent:
            queued.setdefault(execution_id, []).append(("task.queued", key, {"pool": pool_name}))
        for execution_id, items in queued.items():
            events.emit_many(execution_id, items)
    if within:
        return None if over_budget else len(sent)
    # Outside the pool's lock: the stop touches tasks of every pool of the execution.
    for execution_id in sorted(over_budget):
        stop_for_budget(execution_id)
    return len(sent)


def _queue(chosen: list[tuple], now: datetime) -> list[tuple[int, int, str, str]]:
    """ready → queued for the chosen candidates, in one statement; returns (task id, dispatch
    number, execution id, key) of those it queued, in the candidates' order. A candidate that is no
    longer ready (cancelled since it was read) is skipped: its slot waits for the next dispatch."""
    if not chosen:
        return []
    won = dict(
        hot_updates.update_returning(
            Task,
            {"pk": [c[0] for c in chosen], "status": TaskStatus.READY},
            ("pk", "dispatch_count"),
            assign={"status": TaskStatus.QUEUED, "queued_at": now},
            add={"dispatch_count": 1},
        )
    )
    return [
        (task_id, won[task_id], execution_id, key)
        for task_id, execution_id, key, _ in chosen
        if task_id in won
    ]


# The admission read runs on every dispatch, inside the pool's lock (and on SQLite the write lock):
# one statement, plain SQL written once, rather than the ORM's 0.2–0.5 ms of building and compiling.
def admission(pool_name: str, now: datetime, *, limit: int) -> tuple[int, list[tuple[int, str, str, bool]]]:
    """The pool's queued and running tasks across executions, and its first ready tasks in dispatch
    order whose backoff is over, of executions still executing: (id, execution id, key, whether the
    execution has a budget). With no ready task the count is not needed: 0."""
    not_before = Task._meta.get_field("not_before").get_db_prep_value(now, connection)
    tasks = hot_updates.table(Task)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT t."id", t."execution_id", t."key", e."budget_usd" IS NOT NULL,'
            f' (SELECT COUNT(*) FROM {tasks} a WHERE a."pool" = %s AND a."status" IN (%s, %s))'
            f' FROM {tasks} t INNER JOIN {hot_updates.table(Execution)} e ON t."execution_id" = e."id"'
            f' WHERE t."pool" = %s AND t."status" = %s AND e."status" = %s'
            f' AND (t."not_before" IS NULL OR t."not_before" <= %s)'
            f" ORDER BY {DISPATCH_ORDER[settings.OPENCLAW_DISPATCH_ORDER]} LIMIT %s",
            [
                pool_name,
                TaskStatus.QUEUED,
                TaskStatus.RUNNING,
                pool_name,
                TaskStatus.READY,
                ExecutionStatus.EXECUTING,
                not_before,
                limit,
            ],
        )
        rows = cursor.fetchall()
    active = rows[0][4] if rows else 0
    return active, [
        (task_id, execution_id, key, bool(budget)) for task_id, execution_id, key, budget, _ in rows
    ]


def budget_allows(execution_id: str, pool_name: str) -> bool:
    from .billing import budget_allows_dispatch

    return budget_allows_dispatch(execution_id, pool_name)


def stop_for_budget(execution_id: str) -> list[str]:
    """The budget blocked a dispatch: no new task of the execution starts. Ready tasks are cancelled,
    their dependents blocked, the other waiting tasks cancelled; running ones finish, then the
    execution aggregates (and ends `budget_exceeded`). Returns the cancelled task keys."""
    with transaction.atomic():
        lock_execution(execution_id)
        cancelled = _cancel_for_budget(execution_id, TaskStatus.READY)
        block_dependents(execution_id)
        cancelled += _cancel_for_budget(execution_id, TaskStatus.PENDING)
        if cancelled:
            events.emit(execution_id, "execution.budget_exceeded", payload={"cancelled": cancelled})
        maybe_finish_work(execution_id)
    return cancelled


def _cancel_for_budget(execution_id: str, status: str) -> list[str]:
    from .billing import BUDGET_STOP_ERROR

    now = timezone.now()
    cancelled = []
    for task_id, key in Task.objects.filter(execution_id=execution_id, status=status).values_list(
        "id", "key"
    ):
        if cas_task(task_id, status, status=TaskStatus.CANCELLED, finished_at=now, error=BUDGET_STOP_ERROR):
            events.emit(execution_id, "task.cancelled", task_key=key, payload={"reason": BUDGET_STOP_ERROR})
            cancelled.append(key)
    return cancelled


def dispatch_after_commit(pools: Iterable[str]) -> None:
    pools = set(pools)
    transaction.on_commit(lambda: dispatch_ready_pools(pools))


def create_tasks(
    execution: Execution, plan_tasks: list[dict], *, expected: dict[str, float], weights: dict[str, float]
) -> list[Task]:
    """Insert a plan's tasks: those with no hard dependency start `ready`, the others `pending`."""
    pools = {p.name: p for p in WorkerPool.objects.all()}
    ranks = upward_ranks(
        PlanNode(t["id"], t["pool"], expected[t["id"]], t["priority"], tuple(t["blocked_by"]))
        for t in plan_tasks
    )
    now = timezone.now()
    tasks = [
        Task(
            execution=execution,
            key=t["id"],
            pool=t["pool"],
            description=t["description"],
            kind=t.get("kind", "plan"),
            priority=t["priority"],
            timeout_sec=t["timeout_sec"],
            blocked_by=t["blocked_by"],
            soft_deps=t["soft_deps"],
            context=t["context"],
            expected_sec=expected[t["id"]],
            weight=weights[t["id"]],
            rank=ranks[t["id"]],
            max_retries=pools[t["pool"]].max_retries if t["pool"] in pools else 2,
            parent_id=t.get("parent_id"),
            status=TaskStatus.PENDING if t["blocked_by"] else TaskStatus.READY,
            ready_at=None if t["blocked_by"] else now,
        )
        for t in plan_tasks
    ]
    return Task.objects.bulk_create(tasks)


def add_tasks(execution_id: str, new_tasks: list[dict]) -> list[Task]:
    """Add tasks to a running execution (remediation, re-audit, revision); ranks of the new part only."""
    lock_execution(execution_id)
    execution = Execution.objects.get(pk=execution_id)
    expected = {t["id"]: t.pop("expected_sec", 1.0) for t in new_tasks}
    created = create_tasks(execution, new_tasks, expected=expected, weights=dict.fromkeys(expected, 0.0))
    for task in created:
        events.emit(
            execution_id,
            "task.created",
            task_key=task.key,
            payload={
                "pool": task.pool,
                "kind": task.kind,
                "description": task.description[:200],
                "blocked_by": task.blocked_by,
            },
        )
    dispatch_after_commit(t.pool for t in created)
    return created


def promote_dependents(execution_id: str) -> set[str]:
    """pending → ready for every task whose hard dependencies all succeeded; returns their pools."""
    rows = list(
        Task.objects.filter(execution_id=execution_id).values("id", "key", "status", "blocked_by", "pool")
    )
    done = {r["key"] for r in rows if r["status"] == TaskStatus.SUCCEEDED}
    ready = {
        r["id"]: r
        for r in rows
        if r["status"] == TaskStatus.PENDING and all(dep in done for dep in r["blocked_by"])
    }
    if not ready:
        return set()
    promoted = sorted(
        task_id
        for (task_id,) in hot_updates.update_returning(
            Task,
            {"pk": sorted(ready), "status": TaskStatus.PENDING},
            ("pk",),
            assign={"status": TaskStatus.READY, "ready_at": timezone.now()},
        )
    )
    events.emit_many(execution_id, [("task.ready", ready[task_id]["key"], None) for task_id in promoted])
    return {ready[task_id]["pool"] for task_id in promoted}


def block_dependents(execution_id: str) -> list[str]:
    """Every pending task that (transitively) waits on a dead, blocked or cancelled task → blocked."""
    rows = list(Task.objects.filter(execution_id=execution_id).values("id", "key", "status", "blocked_by"))
    lost = {
        r["key"] for r in rows if r["status"] in (TaskStatus.DEAD, TaskStatus.BLOCKED, TaskStatus.CANCELLED)
    }
    blocked = []
    changed = True
    while changed:
        changed = False
        for row in rows:
            if row["status"] == TaskStatus.PENDING and any(dep in lost for dep in row["blocked_by"]):
                causes = [dep for dep in row["blocked_by"] if dep in lost]
                if cas_task(
                    row["id"],
                    TaskStatus.PENDING,
                    status=TaskStatus.BLOCKED,
                    finished_at=timezone.now(),
                    error=f"blocked: needs {', '.join(causes)}",
                ):
                    events.emit(execution_id, "task.blocked", task_key=row["key"], payload={"needs": causes})
                    blocked.append(row["key"])
                row["status"] = TaskStatus.BLOCKED
                lost.add(row["key"])
                changed = True
    return blocked


def maybe_finish_work(execution_id: str) -> bool:
    """executing → aggregating once no task can still make progress; sends the aggregation message."""
    open_states = [
        TaskStatus.PENDING,
        TaskStatus.READY,
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
    ]
    if Task.objects.filter(execution_id=execution_id, status__in=open_states).exists():
        return False
    now = timezone.now()
    if not cas_execution(
        execution_id, ExecutionStatus.EXECUTING, status=ExecutionStatus.AGGREGATING, phase_sent_at=now
    ):
        return False
    events.emit(execution_id, "execution.aggregating")
    from .tasks import aggregate_execution

    transaction.on_commit(lambda: aggregate_execution.send(execution_id))
    return True


# A task's attempts so far, as a subquery of the task row (a GROUP BY over the task and its
# execution's columns would cost more).
attempt_count = (
    Attempt.objects.filter(task=OuterRef("pk")).order_by().values("task").annotate(n=Count("pk")).values("n")
)


def task_start(task_id: int, dispatch_no: int, worker: str, *, lease_sec: float) -> Attempt | None:
    """queued → running for the message of this dispatch only; None for a stale or duplicate message."""
    now = timezone.now()
    # The task as the agent needs it, read before the transition: the transaction, which waits its
    # turn at the write lock on the critical path, stays short. What the transition changes is set
    # on it below; the attempts cannot change if the CAS wins (attempts are created by the CAS's
    # winner only, and this dispatch's message is the only one that can win until the task is
    # queued again). The execution's plan is not the agent's business (and is the largest column).
    task = (
        Task.objects.filter(pk=task_id)
        .select_related("execution")
        .defer("execution__plan")
        .annotate(attempts_so_far=Subquery(attempt_count))
        .first()
    )
    if task is None:
        return None
    with transaction.atomic():
        lock_execution(task.execution_id)
        if not hot_updates.update(
            Task,
            {"pk": task_id, "status": TaskStatus.QUEUED, "dispatch_count": dispatch_no},
            assign={"status": TaskStatus.RUNNING, "started_at": now, "progress": 0, "error": ""},
        ):
            return None
        number = (task.attempts_so_far or 0) + 1
        attempt = Attempt.objects.create(
            task=task,
            number=number,
            worker=worker,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_sec),
            deadline_at=now + timedelta(seconds=task.timeout_sec),
        )
        events.emit(
            task.execution_id,
            "task.started",
            task_key=task.key,
            payload={"attempt": number, "attempt_id": str(attempt.id), "worker": worker, "pool": task.pool},
        )
    task.status, task.started_at, task.progress, task.error = TaskStatus.RUNNING, now, 0, ""
    return attempt


def attempt_renew(attempt_id, *, lease_sec: float, progress: int | None = None) -> bool:
    """Extend a running attempt's lease (and record progress); False once it is no longer running."""
    now = timezone.now()
    if not Attempt.objects.filter(pk=attempt_id, status="running").update(
        lease_expires_at=now + timedelta(seconds=lease_sec)
    ):
        return False
    if progress is not None:
        Task.objects.filter(attempts__id=attempt_id, status=TaskStatus.RUNNING).update(progress=progress)
    return True


def attempt_succeed(attempt_id, *, result: dict, usage=None) -> bool:
    """Record a successful attempt: the task succeeds, its dependents may become ready.

    `usage` is the attempt's (spec, completion): stored by the updates that close the attempt and
    its task, or, when someone else closed the attempt first, charged as a late report."""
    from . import billing, result_aggregator

    now = timezone.now()
    attempt = attempt_to_close(attempt_id)  # read, and the usage priced, before the write lock
    task = attempt.task
    usage = billing.AttemptUsage.of(*usage) if usage is not None else None
    with transaction.atomic():
        held_limits = lock_dependents_pools(task)
        lock_execution(task.execution_id)
        # The pools left to dispatch after commit: registered first, so that this runs before the
        # events are published (the next agent's start is the critical path).
        pools: set[str] = set()
        transaction.on_commit(lambda: dispatch_ready_pools(pools))
        if not close_attempt(attempt, usage, status="succeeded", finished_at=now):
            return False
        paths = Task.paths_of(result)
        if not cas_task(
            task.pk,
            TaskStatus.RUNNING,
            status=TaskStatus.SUCCEEDED,
            finished_at=now,
            progress=100,
            result=result,
            error="",
            paths=paths,
            add=usage.task_increments() if usage else None,
        ):
            return False
        task.status, task.finished_at, task.progress, task.result, task.error, task.paths = (
            TaskStatus.SUCCEEDED,
            now,
            100,
            result,
            "",
            paths,
        )
        with events.batched(task.execution_id):
            events.emit(
                task.execution_id,
                "task.succeeded",
                task_key=task.key,
                payload={
                    "pool": task.pool,
                    "attempt": attempt.number,
                    "duration_sec": attempt_duration(attempt.started_at, now),
                    "tokens": task.tokens_in + task.tokens_out,
                    "summary": result.get("summary", "")[:300],
                    "files": len(result.get("files", [])),
                    "findings": len(result.get("findings", [])),
                },
            )
            result_aggregator.on_task_succeeded(task)
            promoted = promote_dependents(task.execution_id)
            if not promoted:  # with a task just made ready, the work is not over
                maybe_finish_work(task.execution_id)
            # The new ready tasks and the freed slot, queued in this transaction where possible.
            ready_pools = set(promoted)
            if (
                task.pool not in ready_pools
                and Task.objects.filter(pool=task.pool, status=TaskStatus.READY).exists()
            ):
                ready_pools.add(task.pool)
            pools.update(
                pool
                for pool in sorted(ready_pools)
                if _dispatch_pool(pool, within_execution=task.execution_id, held_limits=held_limits) is None
            )
    return True


def lock_dependents_pools(task: Task) -> dict[str, int | None]:
    """Lock the pools of the tasks waiting on `task` before its execution (the lock order), so that
    its success can queue them there rather than find a pool row locked and leave it to a
    transaction of its own after commit. The dependents are found by a subquery of the locking
    statement, whose rows it does not lock: a dependent added meanwhile is dispatched after commit.
    Returns the locked pools' limits (None for a disabled pool), which the dispatch then need not
    read again. SQLite has no row locks (nor JSON containment in Django)."""
    if not connection.features.has_select_for_update:
        return {}
    dependents = Task.objects.filter(
        execution_id=task.execution_id, status=TaskStatus.PENDING, blocked_by__contains=[task.key]
    )
    return {
        name: limit if enabled else None
        for name, limit, enabled in WorkerPool.objects.select_for_update()
        .filter(name__in=dependents.values("pool"))
        .order_by("name")
        .values_list("name", "max_concurrent", "enabled")
    }


def attempt_duration(started, finished) -> float:
    return round((finished - started).total_seconds(), 3)
