"""The event log: gap-free seqs, batches written in one go, publishing only after commit."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from executions import events
from executions.models import Event
from tests.factories import make_client, make_execution


@pytest.fixture
def two_executions(db):
    client, _ = make_client()
    return make_execution(client, [{"key": "a"}]), make_execution(client, [{"key": "b"}])


def types_and_seqs(execution) -> list[tuple[str, int]]:
    return list(Event.objects.filter(execution=execution).order_by("seq").values_list("type", "seq"))


def test_a_batch_is_written_at_its_end_in_order_with_one_seq_reservation(
    two_executions, django_assert_num_queries, django_capture_on_commit_callbacks
):
    execution, other = two_executions
    before = len(types_and_seqs(execution))
    with (
        django_capture_on_commit_callbacks() as callbacks,
        transaction.atomic(),
        events.batched(execution.pk),
    ):
        # The other execution's event is written at once: its seq reserved and its row inserted,
        # in one statement on PostgreSQL.
        with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
            events.emit(execution.pk, "task.succeeded", task_key="a")
            events.emit(other.pk, "task.queued", task_key="b")
            events.emit_many(
                execution.pk, [("task.ready", "c", None), ("task.queued", "c", {"pool": "codegen"})]
            )
        assert len(types_and_seqs(execution)) == before
        with (
            django_assert_num_queries(0),
            events.batched(other.pk),
        ):  # nested: the outer batch keeps collecting
            events.emit(execution.pk, "task.started", task_key="c")
    logged = types_and_seqs(execution)[before:]
    assert [t for t, _ in logged] == ["task.succeeded", "task.ready", "task.queued", "task.started"]
    assert [s for _, s in logged] == list(range(logged[0][1], logged[0][1] + 4))
    assert len(callbacks) == 2  # one publish per write


def test_an_exception_in_a_batch_writes_nothing(two_executions):
    execution, _ = two_executions
    before = types_and_seqs(execution)
    with pytest.raises(RuntimeError), transaction.atomic(), events.batched(execution.pk):
        events.emit(execution.pk, "task.succeeded", task_key="a")
        raise RuntimeError("the transition failed")
    assert types_and_seqs(execution) == before
    with transaction.atomic(), events.batched(execution.pk):  # the thread is not left collecting
        pass
    events.emit(execution.pk, "task.started", task_key="a")
    assert types_and_seqs(execution)[-1][0] == "task.started"


def test_one_writes_events_reach_each_group_in_one_layer_message(
    two_executions, django_capture_on_commit_callbacks
):
    from unittest import mock

    execution, _ = two_executions
    notified = []
    events.subscribe(notified.append)
    try:
        with (
            mock.patch.object(events, "_publisher") as publisher,
            django_capture_on_commit_callbacks(execute=True),
        ):
            events.emit_many(
                execution.pk,
                [
                    ("task.succeeded", "a", None),
                    ("task.ready", "b", None),
                    ("task.queued", "b", {"pool": "codegen"}),
                ],
            )
    finally:
        events._subscribers.remove(notified.append)
    [(groups, message)] = [call.args for call in publisher.return_value.send.call_args_list]
    assert groups == [events.execution_group(execution.pk), events.CONSOLE_GROUP]
    assert message["type"] == "event.batch"
    assert [(e["type"], e["task"]) for e in message["events"]] == [
        ("task.succeeded", "a"),
        ("task.ready", "b"),
        ("task.queued", "b"),
    ]
    assert [e["seq"] for e in notified] == [e["seq"] for e in message["events"]]  # subscribers: each event


def raw_events(execution) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, type, task_key, payload, created_at FROM executions_event WHERE execution_id = %s"
            " ORDER BY seq",
            [execution.pk],
        )
        return cursor.fetchall()


def test_events_are_stored_as_the_orm_stores_them(two_executions):
    """Compared as stored, column by column, with rows the ORM wrote: JSON, text, datetimes."""
    execution, other = two_executions
    Event.objects.filter(execution__in=[execution, other]).delete()
    payload = {"pool": "codegen", "summary": "café ✓", "files": 2, "nested": {"a": [1, 2.5, None, True]}}
    with transaction.atomic():
        events.emit_many(execution.pk, [("task.succeeded", "a", payload), ("task.ready", "b", None)])
    mine = Event.objects.filter(execution=execution).order_by("seq")
    Event.objects.bulk_create(
        [
            Event(
                execution=other,
                seq=e.seq,
                type=e.type,
                task_key=e.task_key,
                payload=e.payload,
                created_at=e.created_at,
            )
            for e in mine
        ]
    )
    assert raw_events(execution) == raw_events(other)
    assert [(e.type, e.task_key, e.payload) for e in mine] == [
        ("task.succeeded", "a", payload),
        ("task.ready", "b", {}),
    ]
    assert timezone.now() - mine[0].created_at < timedelta(seconds=10)


def test_a_large_batch_is_inserted_in_chunks_with_gap_free_seqs(two_executions, monkeypatch):
    execution, _ = two_executions
    before = len(types_and_seqs(execution))
    monkeypatch.setattr(events, "MAX_ROWS_PER_INSERT", 2)
    with transaction.atomic():
        events.emit_many(execution.pk, [("task.ready", f"t{i}", {"i": i}) for i in range(5)])
        events.emit(execution.pk, "task.queued", task_key="t0")
    logged = types_and_seqs(execution)[before:]
    assert [t for t, _ in logged] == ["task.ready"] * 5 + ["task.queued"]
    assert [s for _, s in logged] == list(range(logged[0][1], logged[0][1] + 6))
    assert list(
        Event.objects.filter(execution=execution, type="task.ready")
        .order_by("seq")
        .values_list("payload", flat=True)
    ) == [{"i": i} for i in range(5)]


def test_an_event_of_a_missing_execution_is_refused_and_nothing_is_stored(db):
    from executions.models import Execution

    with pytest.raises(Execution.DoesNotExist), transaction.atomic():
        events.emit_many("exec_missing", [("task.ready", "a", None)])
    assert not Event.objects.filter(execution_id="exec_missing").exists()


def test_a_publish_redis_refuses_is_logged_not_raised_and_connecting_says_so(settings, caplog):
    """Events are at-most-once: a publish Redis refuses is logged and the publisher goes on. Warming
    up at a process's start does raise, so the start-up log says the publisher is not connected."""
    import redis

    settings.CHANNEL_LAYERS = {
        "default": {**settings.CHANNEL_LAYERS["default"], "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    publisher = events._Publisher()
    with caplog.at_level("WARNING", logger="openclaw.events"):
        publisher.deliver([([events.CONSOLE_GROUP], {"type": "event.message", "event": {"seq": 1}})])
    assert "publishing 1 event message(s) failed" in caplog.text
    with pytest.raises(redis.ConnectionError):
        publisher.connect()
