"""Pure scheduling logic and the dispatcher's admission control and ordering (no broker)."""

import random
from datetime import timedelta

import pytest

from executions.dag import (
    SCORED_COPIES,
    PlanNode,
    dispatch_ranks,
    lower_bound,
    perturbed_plans,
    simulate_makespan,
    topological_order,
    upward_ranks,
)
from executions.dispatch import dispatch_ready_tasks
from executions.models import Execution, Task
from tests.factories import make_client, make_execution, make_pools, run_task_messages

SEED_DAG = [
    PlanNode("task_1", "codegen", 60),
    PlanNode("task_2", "codegen", 90),
    PlanNode("task_3", "database", 45),
    PlanNode("task_4", "security", 120, 2, ("task_2",)),
]
LIMITS = {"codegen": 3, "security": 2, "database": 2}


def test_upward_rank_is_the_critical_path_from_each_task():
    ranks = upward_ranks(SEED_DAG)
    assert ranks == {"task_1": 60, "task_2": 210, "task_3": 45, "task_4": 120}


def test_seed_dag_makespan_is_the_seeds_210_seconds_vs_315_serial():
    assert simulate_makespan(SEED_DAG, LIMITS) == 210
    assert lower_bound(SEED_DAG, LIMITS) == 210
    assert sum(n.duration for n in SEED_DAG) == 315


def test_critical_path_first_beats_fifo_when_slots_are_scarce():
    # One codegen slot: starting the long chain's head first finishes earlier.
    nodes = [
        PlanNode("short", "codegen", 10),
        PlanNode("head", "codegen", 10),
        PlanNode("tail", "security", 100, 1, ("head",)),
    ]
    assert simulate_makespan(nodes, {"codegen": 1, "security": 1}) == 110
    assert simulate_makespan(nodes, {"codegen": 1, "security": 1}, policy="fifo") == 120


def test_tasks_finishing_at_the_same_instant_release_their_dependents_in_key_order():
    # `first` and `second` finish together; whichever is taken first gets the one codegen slot for
    # its dependent at once, so the order decides the makespan, and it is the keys' order.
    def plan(first: str, second: str) -> list[PlanNode]:
        return [
            PlanNode(first, "security", 10),
            PlanNode(second, "database", 10),
            PlanNode("quick", "codegen", 5, 1, (first,)),
            PlanNode("slow", "codegen", 20, 1, (second,)),
            PlanNode("audit", "security", 20, 1, ("slow",)),
        ]

    limits = {"codegen": 1, "security": 1, "database": 1}
    for policy in ("rank", "fifo"):
        assert simulate_makespan(plan("a", "b"), limits, policy=policy) == 55  # quick, slow, audit
        assert simulate_makespan(plan("c", "b"), limits, policy=policy) == 50  # slow first


def test_rank_policy_stays_close_to_the_lower_bound_on_random_dags():
    rng = random.Random(7)
    ratios = []
    for _ in range(30):
        nodes = []
        for i in range(rng.randint(20, 60)):
            deps = tuple(f"t{j}" for j in rng.sample(range(i), k=min(i, rng.randint(0, 2))))
            nodes.append(PlanNode(f"t{i}", rng.choice(list(LIMITS)), rng.uniform(1, 20), 1, deps))
        ratios.append(simulate_makespan(nodes, LIMITS) / lower_bound(nodes, LIMITS))
    assert max(ratios) < 1.3 and sum(ratios) / len(ratios) < 1.15


def test_dispatch_ranks_keep_the_busy_pool_fed_where_critical_path_first_does_not():
    # One slot each. Critical path first starts the long chain c1 → c2 → c3 and leaves e, the only
    # work of pool b, until d runs: 36. Starting d first overlaps e with the chain: 31, the bound.
    nodes = [
        PlanNode("c1", "a", 10),
        PlanNode("c2", "a", 10, 1, ("c1",)),
        PlanNode("c3", "a", 10, 1, ("c2",)),
        PlanNode("d", "a", 1),
        PlanNode("e", "b", 25, 1, ("d",)),
    ]
    limits = {"a": 1, "b": 1}
    assert simulate_makespan(nodes, limits, ranks=upward_ranks(nodes)) == 36
    ranks = dispatch_ranks(nodes, limits)
    assert ranks["d"] > ranks["c1"]
    assert simulate_makespan(nodes, limits, ranks=ranks) == 31 == lower_bound(nodes, limits)
    assert simulate_makespan(nodes, limits) == 31  # the rank policy's default is these ranks


def random_plan(rng: random.Random, n: int) -> list[PlanNode]:
    nodes = []
    for i in range(n):
        deps = tuple(f"t{j}" for j in rng.sample(range(max(0, i - 12), i), k=min(i, rng.randint(0, 3))))
        nodes.append(PlanNode(f"t{i}", rng.choice(list(LIMITS)), rng.choice([3, 5, 8, 10]), 1, deps))
    return nodes


def mean_makespan(plans: list[list[PlanNode]], ranks: dict[str, float]) -> float:
    return sum(simulate_makespan(plan, LIMITS, ranks=ranks) for plan in plans) / len(plans)


def test_dispatch_ranks_are_never_predicted_worse_than_the_upward_ranks_and_are_reproducible():
    rng = random.Random(11)
    upward, searched = [], []
    for _ in range(20):
        nodes = random_plan(rng, 60)
        ranks = dispatch_ranks(nodes, LIMITS)
        assert ranks == dispatch_ranks(list(nodes), dict(LIMITS))
        scored = perturbed_plans(nodes)  # the plan and its copies with slightly moved durations
        assert scored[0] == nodes and len(scored) == SCORED_COPIES
        upward.append(mean_makespan(scored, upward_ranks(nodes)))
        searched.append(mean_makespan(scored, ranks))
        assert searched[-1] <= upward[-1]
    assert sum(searched) < sum(upward)  # better somewhere, not merely never worse


def test_dispatch_ranks_hold_up_when_every_task_finishes_a_little_late():
    """Durations on a grid tie finishes with releases; ranks scored on the exact plan alone win on
    those ties and lose when a run shifts each finish by a few per mille, as the engine's own
    time per task does. Scored on perturbed copies too, they lose less."""
    rng = random.Random(5)
    exact_only, scored = 0.0, 0.0
    for _ in range(20):
        nodes = random_plan(rng, 60)
        late = random.Random(rng.random())
        runs = [
            [
                PlanNode(
                    n.key, n.pool, n.duration * (1.006 + late.uniform(0, 0.01)), n.priority, n.blocked_by
                )
                for n in nodes
            ]
            for _ in range(10)
        ]
        exact_only += mean_makespan(runs, dispatch_ranks(nodes, LIMITS, copies=1))
        scored += mean_makespan(runs, dispatch_ranks(nodes, LIMITS))
    assert scored < exact_only


def test_the_rank_search_is_capped_on_big_plans(monkeypatch):
    """Simulations × tasks stay within the search budget: a 500-task plan gets fewer rounds than a
    60-task one, and at least the floor of 8."""
    from executions import dag

    calls = []
    schedule = dag._Shape.makespan
    monkeypatch.setattr(
        dag._Shape, "makespan", lambda shape, *a: calls.append(len(shape.keys)) or schedule(shape, *a)
    )
    rng = random.Random(3)
    for n, rounds in ((60, 64), (500, max(8, dag.SEARCH_BUDGET // (SCORED_COPIES * 500)))):
        calls.clear()
        dispatch_ranks(random_plan(rng, n), LIMITS)
        assert len(calls) == (rounds + 1) * SCORED_COPIES  # the upward ranks, then each round's candidate
    assert rounds < 64


def test_dispatch_order_follows_the_plans_dispatch_ranks(db):
    """The ranks stored on the tasks are the plan's dispatch ranks, so the dispatcher (ordering by
    the stored rank) follows the schedule the estimate predicted."""
    from executions.task_graph import create_tasks

    make_pools({"codegen": 1, "security": 1, "database": 1})
    execution = make_execution(make_client()[0], [])
    plan = [
        {"id": "c1", "pool": "codegen", "blocked_by": []},
        {"id": "c2", "pool": "codegen", "blocked_by": ["c1"]},
        {"id": "c3", "pool": "codegen", "blocked_by": ["c2"]},
        {"id": "d", "pool": "codegen", "blocked_by": []},
        {"id": "e", "pool": "security", "blocked_by": ["d"]},
    ]
    durations = {"c1": 10, "c2": 10, "c3": 10, "d": 1, "e": 25}
    plan_tasks = [
        {**t, "description": t["id"], "priority": 1, "timeout_sec": 60, "soft_deps": [], "context": {}}
        for t in plan
    ]
    create_tasks(execution, plan_tasks, expected=durations, weights=durations)
    assert dispatch_ready_tasks("codegen") == 1
    assert Task.objects.get(execution=execution, status="queued").key == "d"


def test_topological_order_rejects_cycles():
    with pytest.raises(ValueError):
        topological_order([PlanNode("a", "codegen", 1, 1, ("b",)), PlanNode("b", "codegen", 1, 1, ("a",))])


def queued(pool=None):
    rows = Task.objects.filter(status="queued")
    return sorted(
        rows.filter(pool=pool).values_list("key", flat=True) if pool else rows.values_list("key", flat=True)
    )


@pytest.fixture
def sent():
    """Messages the dispatcher sends on commit, instead of a broker: (task id, pool)."""
    with run_task_messages() as messages:
        yield messages


def test_dispatch_admits_no_more_than_max_concurrent(db, django_capture_on_commit_callbacks, sent):
    make_pools({"codegen": 2, "security": 1, "database": 1})
    client, _ = make_client()
    make_execution(client, [{"key": f"c{i}"} for i in range(5)] + [{"key": "s1", "pool": "security"}])
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch_ready_tasks("codegen") == 2
        assert dispatch_ready_tasks("codegen") == 0
        assert dispatch_ready_tasks("security") == 1
    assert sorted(pool for _, _, pool in sent) == ["codegen", "codegen", "security"]
    assert len(queued("codegen")) == 2
    # A finished slot admits exactly one more.
    Task.objects.filter(key=queued("codegen")[0]).update(status="succeeded")
    with django_capture_on_commit_callbacks():
        assert dispatch_ready_tasks("codegen") == 1
    assert len(queued("codegen")) == 2


def test_dispatch_prefers_priority_then_the_longer_critical_path(db, django_capture_on_commit_callbacks):
    make_pools({"codegen": 2, "security": 1, "database": 1})
    client, _ = make_client()
    make_execution(
        client,
        [
            {"key": "short", "rank": 10},
            {"key": "long", "rank": 200},
            {"key": "middle", "rank": 50},
            {"key": "urgent-short", "rank": 5, "priority": 0},
        ],
    )
    with django_capture_on_commit_callbacks():
        dispatch_ready_tasks("codegen")
    assert queued() == ["long", "urgent-short"]


def test_dispatch_breaks_ties_by_plan_order_across_executions(db, django_capture_on_commit_callbacks):
    make_pools({"codegen": 2, "security": 1, "database": 1})
    client, _ = make_client()
    first = make_execution(client, [{"key": "first-a"}, {"key": "first-b"}])
    second = make_execution(client, [{"key": "second-a"}, {"key": "second-b", "rank": 2.0}])
    # Planned later, and the older execution is the second: plan order, not age, breaks the tie.
    Execution.objects.filter(pk=first.pk).update(created_at=second.created_at + timedelta(seconds=1))
    with django_capture_on_commit_callbacks():
        dispatch_ready_tasks("codegen")
    assert queued() == ["first-a", "second-b"]  # the longer critical path, then the first planned


def test_the_dispatch_read_walks_an_index_in_dispatch_order(db):
    """A pool's backlog of ready tasks is not sorted inside its lock: the plan reads the index
    task_dispatch_order in order and stops at the limit."""
    from django.db import connection
    from django.utils import timezone

    from executions import sql

    make_pools()
    client, _ = make_client()
    make_execution(client, [{"key": f"t{i}", "rank": float(i % 3)} for i in range(30)])
    executed = []
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: (
            executed.append((sql, params)) or execute(sql, params, many, context)
        )
    ):
        sql.admission("codegen", timezone.now(), limit=4)
    [(sql, params)] = executed
    with connection.cursor() as cursor:
        explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
        if connection.vendor == "postgresql":
            # A 30-row table would be scanned and sorted whole: is the ordered index walk possible?
            cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        cursor.execute(explain + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "task_dispatch_order" in plan
    assert "TEMP B-TREE" not in plan and " Sort " not in f" {plan} ", plan


def test_dispatch_ignores_disabled_pools_and_unstarted_executions(db, django_capture_on_commit_callbacks):
    make_pools({"codegen": 2, "security": 1, "database": 1})
    client, _ = make_client()
    make_execution(client, [{"key": "a"}], status="cancelled")
    make_execution(client, [{"key": "b", "pool": "security"}])
    from pools.models import WorkerPool

    WorkerPool.objects.filter(name="security").update(enabled=False)
    with django_capture_on_commit_callbacks():
        assert dispatch_ready_tasks("codegen") == 0
        assert dispatch_ready_tasks("security") == 0


def test_dispatch_waits_out_a_retry_backoff(db, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    make_pools({"codegen": 3, "security": 1, "database": 1})
    client, _ = make_client()
    older = make_execution(client, [{"key": "older-retry"}, {"key": "older"}])
    make_execution(client, [{"key": "newer"}, {"key": "newest"}])
    Task.objects.filter(execution=older, key="older-retry").update(
        not_before=timezone.now() + timedelta(seconds=30)
    )
    with django_capture_on_commit_callbacks():
        assert dispatch_ready_tasks("codegen") == 3
    assert queued() == ["newer", "newest", "older"]
    Task.objects.filter(key="older-retry").update(not_before=timezone.now() - timedelta(seconds=1))
    Task.objects.filter(key="older").update(status="succeeded")
    with django_capture_on_commit_callbacks():
        assert dispatch_ready_tasks("codegen") == 1
    assert "older-retry" in queued()


def test_fifo_dispatch_takes_the_longest_ready_first(db, django_capture_on_commit_callbacks, settings):
    """The benchmarks' FIFO comparison: ready order, whatever the priority and rank."""
    from datetime import timedelta

    from django.utils import timezone

    settings.OPENCLAW_DISPATCH_ORDER = "fifo"
    make_pools({"codegen": 2, "security": 1, "database": 1})
    client, _ = make_client()
    make_execution(client, [{"key": "late", "rank": 200, "priority": 0}, {"key": "early"}, {"key": "middle"}])
    now = timezone.now()
    for key, age in (("late", 1), ("early", 30), ("middle", 10)):
        Task.objects.filter(key=key).update(ready_at=now - timedelta(seconds=age))
    with django_capture_on_commit_callbacks():
        dispatch_ready_tasks("codegen")
    assert queued() == ["early", "middle"]
