"""The hot path's UPDATEs store exactly what `QuerySet.update()` would, on either database."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
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
