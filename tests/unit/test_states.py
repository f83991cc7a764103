"""The state machines as data (`states`) and the compare-and-set moves that obey them (`transitions`)."""

import itertools

import pytest
from django.utils import timezone

from executions.models import Attempt, Conflict, Execution, Task
from executions.states import (
    ATTEMPT_TRANSITIONS,
    CONFLICT_TRANSITIONS,
    EXECUTION_RETRYABLE,
    EXECUTION_TERMINAL,
    EXECUTION_TRANSITIONS,
    TASK_REOPENABLE,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    AttemptStatus,
    ConflictKind,
    ConflictStatus,
    ExecutionStatus,
    TaskStatus,
    TransitionNotAllowed,
    check,
)
from executions.transitions import (
    close_attempt_row,
    move_conflict,
    move_execution,
    move_task,
    move_tasks,
)
from tests.factories import make_client, make_execution, make_pools

TABLES = [
    pytest.param(TaskStatus, TASK_TRANSITIONS, id="task"),
    pytest.param(ExecutionStatus, EXECUTION_TRANSITIONS, id="execution"),
    pytest.param(AttemptStatus, ATTEMPT_TRANSITIONS, id="attempt"),
    pytest.param(ConflictStatus, CONFLICT_TRANSITIONS, id="conflict"),
]


def every_pair(table):
    return list(itertools.product(table, repeat=2))


@pytest.mark.parametrize("statuses,table", TABLES)
def test_every_status_has_a_row_and_every_target_is_a_status(statuses, table):
    assert set(table) == set(statuses.values)
    for source, targets in table.items():
        assert set(targets) <= set(statuses.values), f"{source} → {set(targets) - set(statuses.values)}"


@pytest.mark.parametrize("statuses,table", TABLES)
def test_check_allows_exactly_the_pairs_in_the_table(statuses, table):
    for source, to in every_pair(table):
        if to in table[source]:
            assert check(table, source, to) == [source]
        else:
            with pytest.raises(TransitionNotAllowed, match=f"{source} → {to}"):
                check(table, source, to)


def test_check_refuses_a_set_of_sources_when_any_one_of_them_may_not_move():
    assert sorted(check(TASK_TRANSITIONS, {TaskStatus.READY, TaskStatus.QUEUED}, TaskStatus.CANCELLED)) == [
        "queued",
        "ready",
    ]
    with pytest.raises(TransitionNotAllowed, match="succeeded → cancelled"):
        check(TASK_TRANSITIONS, [TaskStatus.READY, TaskStatus.SUCCEEDED], TaskStatus.CANCELLED)


def test_terminal_tasks_leave_only_by_a_clients_retry():
    exits = {status: set(TASK_TRANSITIONS[status]) for status in TASK_TERMINAL}
    assert exits == {
        TaskStatus.SUCCEEDED: set(),
        TaskStatus.CANCELLED: set(),
        TaskStatus.DEAD: {TaskStatus.READY},
        TaskStatus.BLOCKED: {TaskStatus.READY, TaskStatus.PENDING},
    }
    assert {status for status, targets in exits.items() if targets} == set(TASK_REOPENABLE)


def test_terminal_executions_leave_only_by_a_clients_retry():
    exits = {status: set(EXECUTION_TRANSITIONS[status]) for status in EXECUTION_TERMINAL}
    assert exits == {
        ExecutionStatus.COMPLETED: set(),
        ExecutionStatus.CANCELLED: set(),
        ExecutionStatus.BUDGET_EXCEEDED: set(),
        ExecutionStatus.PARTIAL: {ExecutionStatus.EXECUTING},
        ExecutionStatus.FAILED: {ExecutionStatus.EXECUTING},
    }
    assert {status for status, targets in exits.items() if targets} == set(EXECUTION_RETRYABLE)


def test_a_closed_attempt_never_changes_again():
    for status in AttemptStatus:
        if status != AttemptStatus.RUNNING:
            assert ATTEMPT_TRANSITIONS[status] == frozenset()
    assert AttemptStatus.RUNNING not in ATTEMPT_TRANSITIONS[AttemptStatus.RUNNING]


# ---------------------------------------------------------------- compare-and-set on rows


@pytest.fixture
def execution(db):
    make_pools()
    client, _ = make_client()
    return make_execution(
        client,
        [
            {"key": "a", "status": "ready"},
            {"key": "b", "status": "ready"},
            {"key": "c", "status": "queued"},
            {"key": "done", "status": "succeeded"},
        ],
    )


def task(execution: Execution, key: str) -> Task:
    return Task.objects.get(execution=execution, key=key)


def test_a_move_not_in_the_table_raises_before_any_sql_and_leaves_the_row(
    execution, django_assert_num_queries
):
    done = task(execution, "done")
    with django_assert_num_queries(0), pytest.raises(TransitionNotAllowed, match="succeeded → running"):
        move_task(done.pk, TaskStatus.SUCCEEDED, TaskStatus.RUNNING, error="rerun")
    done.refresh_from_db()
    assert done.status == "succeeded" and done.error == ""


def test_an_allowed_move_wins_once_and_the_same_move_again_changes_nothing(execution):
    a = task(execution, "a")
    assert move_task(a.pk, TaskStatus.READY, TaskStatus.QUEUED, dispatch_count=1) is True
    assert move_task(a.pk, TaskStatus.READY, TaskStatus.QUEUED, dispatch_count=2) is False
    a.refresh_from_db()
    assert (a.status, a.dispatch_count) == ("queued", 1)


def test_a_move_with_an_extra_condition_loses_when_the_condition_does_not_hold(execution):
    a = task(execution, "a")
    assert move_task(a.pk, TaskStatus.READY, TaskStatus.QUEUED, where={"dispatch_count": 7}) is False
    assert move_task(a.pk, TaskStatus.READY, TaskStatus.QUEUED, where={"dispatch_count": 0}) is True


def test_move_tasks_moves_only_the_rows_still_in_the_expected_status_and_returns_them(execution):
    ids = {key: task(execution, key).pk for key in ("a", "b", "c", "done")}
    moved = move_tasks(ids.values(), TaskStatus.READY, TaskStatus.QUEUED, returning=("pk", "key"))
    assert sorted(moved) == sorted([(ids["a"], "a"), (ids["b"], "b")])
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert statuses == {"a": "queued", "b": "queued", "c": "queued", "done": "succeeded"}
    assert move_tasks(ids.values(), TaskStatus.READY, TaskStatus.QUEUED) == []


def test_move_tasks_of_no_tasks_is_a_no_op_and_still_refuses_a_bad_move(execution, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert move_tasks([], TaskStatus.READY, TaskStatus.QUEUED) == []
    with pytest.raises(TransitionNotAllowed):
        move_tasks([task(execution, "done").pk], TaskStatus.SUCCEEDED, TaskStatus.READY)


def test_an_execution_moves_from_the_expected_status_only(execution):
    with pytest.raises(TransitionNotAllowed, match="completed → executing"):
        move_execution(execution.pk, ExecutionStatus.COMPLETED, ExecutionStatus.EXECUTING)
    assert move_execution(execution.pk, ExecutionStatus.AGGREGATING, ExecutionStatus.COMPLETED) is False
    assert move_execution(execution.pk, ExecutionStatus.EXECUTING, ExecutionStatus.AGGREGATING) is True
    assert Execution.objects.get(pk=execution.pk).status == "aggregating"


def test_an_attempt_is_closed_once(execution):
    a = task(execution, "a")
    now = timezone.now()
    attempt = Attempt.objects.create(task=a, number=1, lease_expires_at=now, deadline_at=now)
    with pytest.raises(TransitionNotAllowed, match="running → running"):
        close_attempt_row(attempt.pk, AttemptStatus.RUNNING)
    assert close_attempt_row(attempt.pk, AttemptStatus.SUCCEEDED, assign={"finished_at": now}) is True
    assert close_attempt_row(attempt.pk, AttemptStatus.FAILED, assign={"error": "late"}) is False
    attempt.refresh_from_db()
    assert (attempt.status, attempt.error) == ("succeeded", "")


def test_a_conflict_in_resolving_may_start_another_round_but_a_resolved_one_may_not(execution):
    conflict = Conflict.objects.create(
        execution=execution,
        kind=ConflictKind.SECURITY_FINDING,
        description="SQL injection",
        status=ConflictStatus.RESOLVING,
        rounds=1,
    )
    assert move_conflict(conflict.pk, ConflictStatus.RESOLVING, ConflictStatus.RESOLVING, rounds=2) is True
    assert Conflict.objects.get(pk=conflict.pk).rounds == 2
    assert move_conflict(conflict.pk, ConflictStatus.RESOLVING, ConflictStatus.RESOLVED) is True
    with pytest.raises(TransitionNotAllowed, match="resolved → resolving"):
        move_conflict(conflict.pk, ConflictStatus.RESOLVED, ConflictStatus.RESOLVING)
    assert Conflict.objects.get(pk=conflict.pk).status == "resolved"
