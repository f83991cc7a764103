"""The hot path's UPDATEs store exactly what `QuerySet.update()` would, on either database."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F, Subquery
from django.utils import timezone

from executions import sql
from executions.models import Attempt, Execution, Task
from tests.factories import make_client, make_execution, make_pools


@pytest.fixture
def two_tasks(db):
    make_pools()
    client, _ = make_client()
    execution = make_execution(client, [{"key": "a"}, {"key": "b"}])
    return (
        execution,
        Task.objects.get(execution=execution, key="a"),
        Task.objects.get(execution=execution, key="b"),
    )


def stored(task: Task) -> dict:
    return (
        Task.objects.filter(pk=task.pk)
        .values("status", "started_at", "result", "paths", "progress", "tokens_in", "cost_usd")
        .get()
    )


def test_an_update_stores_what_the_orm_stores(two_tasks):
    """Datetimes, JSON and decimals set, and integers and decimals added, on two rows: one through
    the ORM, one through hot_updates, then read back through the ORM."""
    _, a, b = two_tasks
    now = timezone.now()
    result = {"summary": "ok", "files": [{"path": "app.py", "content": "print('é')\n"}], "findings": []}
    changes = {"status": "running", "started_at": now, "result": result, "paths": ["app.py"], "progress": 40}
    Task.objects.filter(pk=a.pk, status__in=["ready"]).update(
        **changes, tokens_in=F("tokens_in") + 900, cost_usd=F("cost_usd") + Decimal("0.002691")
    )
    assert (
        sql.update(
            Task,
            {"pk": b.pk, "status": ["ready"]},
            assign=changes,
            add={"tokens_in": 900, "cost_usd": Decimal("0.002691")},
        )
        == 1
    )
    assert stored(b) == stored(a)
    assert stored(b)["cost_usd"] == Decimal("0.002691") and stored(b)["started_at"] == now
    # As stored, not only as read back: text comparisons on SQLite (`not_before <= now`) rely on it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT started_at, result, paths, cost_usd FROM executions_task "
            "WHERE id IN (%s, %s) ORDER BY id",
            [a.pk, b.pk],
        )
        as_orm, as_hot = cursor.fetchall()
    assert as_hot == as_orm


def test_an_update_whose_condition_fails_changes_nothing(two_tasks):
    _, a, _ = two_tasks
    assert (
        sql.update(Task, {"pk": a.pk, "status": ["running", "queued"]}, assign={"status": "succeeded"}) == 0
    )
    assert sql.update(Task, {"pk": a.pk, "dispatch_count": 1}, assign={"status": "succeeded"}) == 0
    assert Task.objects.get(pk=a.pk).status == "ready"


def test_a_uuid_key_and_a_text_key_match_as_in_the_orm(two_tasks):
    """Attempts have UUID keys (char(32) on SQLite, uuid on PostgreSQL); executions text ones."""
    execution, a, _ = two_tasks
    now = timezone.now()
    attempt = Attempt.objects.create(
        task=a,
        number=1,
        worker="w",
        started_at=now,
        lease_expires_at=now,
        deadline_at=now + timedelta(seconds=60),
    )
    assert sql.update(Attempt, {"pk": attempt.pk, "status": "running"}, assign={"status": "succeeded"}) == 1
    assert Attempt.objects.get(pk=attempt.pk).status == "succeeded"
    assert sql.update(Execution, {"pk": execution.pk}, add={"tokens_in": 5, "cost_usd": Decimal("1.5")}) == 1
    assert Execution.objects.filter(pk=execution.pk).values_list("tokens_in", "cost_usd").get() == (
        5,
        Decimal("1.5"),
    )


def test_an_update_without_a_change_or_a_condition_is_refused(two_tasks):
    _, a, _ = two_tasks
    with pytest.raises(ValueError):
        sql.update(Task, {"pk": a.pk})
    with pytest.raises(ValueError):
        sql.update(Task, {}, assign={"status": "dead"})
    with pytest.raises(ValueError):
        sql.update(Task, {"status": []}, assign={"status": "dead"})
    assert Task.objects.get(pk=a.pk).status == "ready"


def test_an_update_of_several_rows_returns_those_it_changed(two_tasks):
    """The dispatcher's one-statement ready → queued: rows whose condition fails are left out."""
    execution, a, b = two_tasks
    Task.objects.filter(pk=b.pk).update(status="cancelled")
    now = timezone.now()
    returned = sql.update_returning(
        Task,
        {"pk": [a.pk, b.pk], "status": "ready"},
        ("pk", "dispatch_count"),
        assign={"status": "queued", "queued_at": now},
        add={"dispatch_count": 1},
    )
    assert returned == [(a.pk, 1)]
    assert Task.objects.filter(pk=a.pk).values_list("status", "queued_at", "dispatch_count").get() == (
        "queued",
        now,
        1,
    )
    assert Task.objects.get(pk=b.pk).status == "cancelled"


# ---------------------------------------------------------------- reads compiled once


def orm_fields(obj) -> dict:
    deferred = obj.get_deferred_fields()
    return {
        f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields if f.attname not in deferred
    }


def new_attempt(task: Task) -> Attempt:
    now = timezone.now()
    return Attempt.objects.create(
        task=task, number=1, worker="w", started_at=now, lease_expires_at=now, deadline_at=now
    )


def test_a_compiled_read_gives_the_instances_the_orm_gives(two_tasks, django_assert_num_queries):
    """The task with its execution (some columns deferred) and its attempt count, for two tasks in
    turn (the second run substitutes its value into the SQL compiled for the first)."""
    from executions.attempts import attempt_count, running_task

    execution, a, b = two_tasks
    Task.objects.filter(pk=a.pk).update(
        result={"files": [{"path": "é.py", "content": "x"}]},
        started_at=timezone.now(),
        cost_usd=Decimal("0.125"),
    )
    Execution.objects.filter(pk=execution.pk).update(plan={"tasks": [1]}, cost_usd=Decimal("1.5"))
    new_attempt(b)
    for task in (a, b, a):
        expected = (
            Task.objects.select_related("execution")
            .defer("execution__plan", "execution__contract_report", "execution__integration")
            .annotate(attempts_so_far=Subquery(attempt_count))
            .get(pk=task.pk)
        )
        got = running_task(task.pk, with_attempt_count=True)
        assert orm_fields(got) == orm_fields(expected)
        assert got.attempts_so_far == expected.attempts_so_far == (1 if task == b else None)
        with django_assert_num_queries(0):
            assert orm_fields(got.execution) == orm_fields(expected.execution)
        assert got.execution.get_deferred_fields() == {"plan", "contract_report", "integration"}
        assert got.execution.plan == {"tasks": [1]}  # a deferred field loads when read, as with the ORM
    assert running_task(10**9) is None


def test_a_compiled_read_with_a_uuid_key_and_an_annotation(two_tasks):
    from executions.attempts import attempt_to_close

    execution, a, _ = two_tasks
    attempt = new_attempt(a)
    got = attempt_to_close(attempt.pk)
    assert (got.pk, got.task.key, got.client_id) == (attempt.pk, "a", execution.client_id)
    assert got.started_at == Attempt.objects.get(pk=attempt.pk).started_at
    with pytest.raises(Attempt.DoesNotExist):
        attempt_to_close(Attempt(task=a).pk)


def test_a_compiled_read_with_in_lists_of_every_length(two_tasks):
    """A list value is an IN list, compiled once per length; an empty one goes to the ORM."""
    from executions.agent_attempt import dependencies_and_versions

    execution, a, b = two_tasks
    c = Task.objects.create(execution=execution, key="c", pool="codegen", description="c", rank=1.0)
    fix = Task.objects.create(
        execution=execution,
        key="a_fix",
        pool="codegen",
        description="f",
        rank=1.0,
        parent=a,
        kind="remediation",
    )
    cases = {
        ("a",): {a.pk, fix.pk},
        ("a", "b"): {a.pk, b.pk, fix.pk},
        ("b", "c"): {b.pk},  # c is the reader, left out
        ("z",): set(),
        (): set(),
    }
    for keys, expected in cases.items():
        got = dependencies_and_versions.all(execution.pk, c.pk, list(keys))
        assert {t.pk for t in got} == expected, keys


def test_a_value_the_sql_does_not_hold_as_a_parameter_is_refused(two_tasks):
    read = sql.CompiledRead(lambda key: Task.objects.filter(key="a"), Task._meta.get_field("key"))
    with pytest.raises(ValueError, match="not a parameter"):
        read.all("b")


@pytest.mark.parametrize(
    "build",
    [
        lambda e: Task.objects.filter(execution_id=e).values("id", "key", "status", "blocked_by", "cost_usd"),
        lambda e: Task.objects.filter(execution_id=e).values_list("pk", "started_at", "result"),
        lambda e: Task.objects.filter(execution_id=e).order_by("-key").values_list("key", flat=True),
        lambda e: Task.objects.filter(execution_id=e, status__in=["ready", "queued"]).values_list(
            "pk", flat=True
        )[:1],
        lambda e: Task.objects.filter(execution_id=e).only("key", "paths"),
    ],
    ids=["values", "values_list", "flat", "sliced", "only"],
)
def test_a_compiled_read_of_values_gives_what_the_orm_gives(two_tasks, build):
    execution, a, _ = two_tasks
    Task.objects.filter(pk=a.pk).update(
        started_at=timezone.now(), result={"k": [1, "é"]}, cost_usd=Decimal("0.5"), paths=["x.py"]
    )
    read = sql.CompiledRead(build, Task._meta.get_field("execution"))
    other = make_execution(execution.client, [{"key": "z"}])
    for execution_id in (execution.pk, other.pk, execution.pk):
        got, expected = read.all(execution_id), list(build(execution_id))
        if got and hasattr(got[0], "_meta"):
            got, expected = [orm_fields(t) for t in got], [orm_fields(t) for t in expected]
        assert got == expected


def test_a_compiled_read_that_locks_rows(two_tasks):
    """select_for_update (FOR UPDATE on PostgreSQL, nothing on SQLite) inside a transaction."""
    from django.db import transaction

    from pools.models import WorkerPool

    read = sql.CompiledRead(
        lambda name: (
            WorkerPool.objects.select_for_update()
            .filter(name=name, enabled=True)
            .values_list("max_concurrent", flat=True)
        ),
        WorkerPool._meta.get_field("name"),
    )
    with transaction.atomic():
        assert (read.first("codegen"), read.first("security"), read.first("nope")) == (3, 2, None)


def test_compile_reads_compiles_the_hot_paths_reads_before_their_first_use(two_tasks, monkeypatch):
    from executions.attempts import running_task

    sql.compile_reads()
    compiled = [r for r in sql.CompiledRead.declared if r._compiled]
    # The reads of a task's start and success, among others (a read of IN lists waits for a length).
    assert len(compiled) >= 10, len(compiled)

    def no_compiling(self, sizes):
        raise AssertionError("compiled on first use")

    monkeypatch.setattr(sql.CompiledRead, "_compile", no_compiling)
    task = two_tasks[1]
    assert running_task(task.pk, with_attempt_count=True).key == task.key
    assert sql.compile_reads() == 0  # nothing left to compile
