"""Budgets: spent + reserved checked before each dispatch; over budget the execution stops starting
work, lets running tasks finish, and ends `budget_exceeded` with a refund by policy."""

from decimal import Decimal

import pytest
from django.utils import timezone

from executions import billing
from executions.dispatch import stop_for_budget
from executions.models import Execution, Task
from executions.result_aggregator import final_status
from executions.states import TaskStatus
from tests.conftest import configure


@pytest.fixture
def execution(db, client_and_key):
    configure()  # offline model at $3 / $15 per Mtok on every pool
    client, _ = client_and_key
    return Execution.objects.create(
        id="exec_budget",
        client=client,
        session_key="s",
        message="m",
        status="executing",
        budget_usd=Decimal("0.10"),
        started_at=timezone.now(),
    )


def add_task(execution, key, pool="codegen", status=TaskStatus.READY, blocked_by=()):
    return Task.objects.create(
        execution=execution, key=key, pool=pool, description=key, status=status, blocked_by=list(blocked_by)
    )


def test_spent_plus_reserved_plus_the_next_task_must_fit(execution):
    # Without history a codegen attempt is expected to take 2000 tokens in, 3000 out: $0.051.
    assert billing.attempt_estimates({"codegen"})["codegen"].cost == Decimal("0.051")
    assert billing.budget_allows_dispatch(execution.pk, "codegen")
    add_task(execution, "running", status=TaskStatus.RUNNING)  # reserves $0.051
    assert not billing.budget_allows_dispatch(execution.pk, "codegen")
    Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("0.02"))
    assert billing.budget_allows_dispatch(execution.pk, "database")  # 0.02 + 0.051 + 0.0285 = 0.0995
    Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("0.03"))
    assert not billing.budget_allows_dispatch(execution.pk, "database")  # 0.1095


def test_no_budget_never_blocks(execution):
    Execution.objects.filter(pk=execution.pk).update(budget_usd=None, cost_usd=Decimal("1000"))
    assert billing.budget_allows_dispatch(execution.pk, "codegen")


def test_estimates_follow_the_pools_history(execution):
    task = add_task(execution, "done", status=TaskStatus.SUCCEEDED)
    now = timezone.now()
    for number in range(1, 7):
        task.attempts.create(
            number=number,
            status="succeeded",
            started_at=now,
            finished_at=now,
            lease_expires_at=now,
            deadline_at=now,
            tokens_in=1000,
            tokens_out=1000,
        )
    estimate = billing.attempt_estimates({"codegen"})["codegen"]
    assert estimate.from_history and estimate.cost == Decimal("0.018")  # 1000 × 3 + 1000 × 15 per Mtok
    assert estimate.attempts_per_task == Decimal("6")


def test_another_clients_traffic_moves_an_estimate_at_most_fourfold(execution):
    """Attempts of huge outputs (any client's) raise the pool's estimate only to 4× its expectation:
    fees by tokens and budgets of others stay within reach of what the admin configured."""
    task = add_task(execution, "done", status=TaskStatus.SUCCEEDED)
    now = timezone.now()
    for number in range(1, 7):
        task.attempts.create(
            number=number,
            status="succeeded",
            started_at=now,
            finished_at=now,
            lease_expires_at=now,
            deadline_at=now,
            tokens_in=10_000_000,
            tokens_out=10_000_000,
        )
    estimate = billing.attempt_estimates({"codegen"})["codegen"]
    assert (estimate.tokens_in, estimate.tokens_out) == (2000 * 4, 3000 * 4)


def test_the_budget_stop_cancels_waiting_work_and_blocks_dependents(execution):
    add_task(execution, "running", status=TaskStatus.RUNNING)
    add_task(execution, "ready")
    add_task(execution, "after_ready", status=TaskStatus.PENDING, blocked_by=["ready"])
    add_task(execution, "after_running", status=TaskStatus.PENDING, blocked_by=["running"])
    assert sorted(stop_for_budget(execution.pk)) == ["after_running", "ready"]
    status = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert status == {
        "running": "running",
        "ready": "cancelled",
        "after_ready": "blocked",
        "after_running": "cancelled",
    }
    assert Execution.objects.get(pk=execution.pk).status == "executing"  # the running task finishes first
    Execution.objects.filter(pk=execution.pk).update(budget_usd=Decimal("100"))
    assert not billing.budget_allows_dispatch(execution.pk, "codegen")  # a stop is final
    Task.objects.filter(execution=execution, key="running").update(status=TaskStatus.SUCCEEDED)
    assert final_status(list(Task.objects.filter(execution=execution))) == "budget_exceeded"
