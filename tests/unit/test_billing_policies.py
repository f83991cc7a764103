"""Refund and pricing policies: the rules, the seed's 60% example, the shipped defaults."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import billing
from executions.models import Execution, LedgerEntry, PricingPolicy, RefundPolicy, Task
from executions.states import TaskStatus

NOW = timezone.now()


def seed_tasks(lost=("backend", "security"), started=True) -> list[Task]:
    """The seed's restaurant plan: frontend 60 s, backend 90 s, database 45 s, security 120 s."""
    weights = {"frontend": 60, "backend": 90, "database": 45, "security": 120}
    return [
        Task(
            key=key,
            weight=w,
            kind="plan",
            started_at=NOW if started else None,
            status=TaskStatus.DEAD if key in lost else TaskStatus.SUCCEEDED,
        )
        for key, w in weights.items()
    ]


def refund(policy: RefundPolicy, status: str, tasks: list[Task], fee: str = "3.20") -> Decimal:
    return billing.money(Decimal(fee) * policy.refund_share(status, tasks))


def test_seed_example_backend_and_security_lost_refunds_sixty_percent():
    policy = RefundPolicy()  # the model's defaults are the seed's policy
    assert policy.undelivered_share(seed_tasks()) == Decimal(210) / Decimal(315)
    assert policy.refund_share("partial", seed_tasks()) == Decimal("0.6")
    assert refund(policy, "partial", seed_tasks()) == Decimal("1.92")


def test_share_by_task_count():
    policy = RefundPolicy(share_rule="count")
    assert policy.refund_share("partial", seed_tasks()) == Decimal("0.45")  # 0.9 × 2/4


def test_floor_and_cap():
    one_lost = seed_tasks(lost=("database",))  # 45/315 × 0.9 ≈ 12.9%
    assert refund(RefundPolicy(floor_share=Decimal("0.25")), "partial", one_lost) == Decimal("0.80")
    assert refund(RefundPolicy(cap_share=Decimal("0.5")), "partial", seed_tasks()) == Decimal("1.60")
    assert refund(RefundPolicy(), "partial", one_lost) == Decimal("0.41")  # 3.20 × 0.9 × 45/315 = 0.4114


def test_failed_is_a_full_refund_and_completed_none():
    everything = seed_tasks(lost=("frontend", "backend", "database", "security"))
    assert refund(RefundPolicy(), "failed", everything) == Decimal("3.20")
    assert refund(RefundPolicy(), "completed", seed_tasks(lost=())) == Decimal("0.00")


def test_cancelled_before_and_after_work_started_as_configured():
    # The default: a cancel refunds the whole fee before any work, the undelivered share after.
    not_started = seed_tasks(lost=("frontend", "backend", "database", "security"), started=False)
    assert refund(RefundPolicy(), "cancelled", not_started) == Decimal("3.20")
    assert refund(RefundPolicy(), "cancelled", seed_tasks()) == Decimal("1.92")
    strict = RefundPolicy(on_cancelled_before_start="none", on_cancelled_after_start="none")
    assert refund(strict, "cancelled", not_started) == refund(strict, "cancelled", seed_tasks()) == 0


def test_budget_exceeded_like_partial_unless_configured():
    assert refund(RefundPolicy(), "budget_exceeded", seed_tasks()) == Decimal("1.92")
    assert refund(RefundPolicy(on_budget_exceeded="none"), "budget_exceeded", seed_tasks()) == Decimal("0.00")


def test_remediation_work_does_not_count_toward_the_undelivered_share():
    tasks = seed_tasks() + [Task(key="fix_1", weight=0, kind="remediation", status=TaskStatus.CANCELLED)]
    assert RefundPolicy().refund_share("partial", tasks) == Decimal("0.6")


def test_pricing_per_task_and_by_tokens():
    assert billing.money(PricingPolicy().fee(task_count=4, estimated_cost=Decimal("9"))) == Decimal("3.20")
    assert PricingPolicy(minimum_fee=Decimal("5")).fee(task_count=4, estimated_cost=Decimal("0")) == Decimal(
        "5"
    )
    tokens = PricingPolicy(method="tokens", markup=Decimal("1.5"), minimum_fee=Decimal("0.50"))
    assert tokens.fee(task_count=4, estimated_cost=Decimal("2.00")) == Decimal("3.000")
    assert tokens.fee(task_count=4, estimated_cost=Decimal("0.10")) == Decimal("0.50")


@pytest.mark.django_db
def test_the_shipped_default_policies_reproduce_the_seed():
    refund_policy, pricing = RefundPolicy.current(), PricingPolicy.current()
    assert refund_policy.pk and refund_policy.name == "seed-default"
    assert pricing.pk and pricing.name == "seed-default"
    assert billing.fee_for_plan(task_count=4, estimated_cost=Decimal("0")) == Decimal("3.20")
    assert billing.money(Decimal("3.20") * refund_policy.refund_share("partial", seed_tasks())) == Decimal(
        "1.92"
    )
    # The shipped policy (migrations, then config.json) refunds a cancel.
    assert (refund_policy.on_cancelled_before_start, refund_policy.on_cancelled_after_start) == (
        "full",
        "undelivered",
    )


@pytest.mark.django_db
def test_without_policy_rows_the_built_in_defaults_apply(client_and_key):
    RefundPolicy.objects.all().delete()
    PricingPolicy.objects.all().delete()
    client, _ = client_and_key
    execution = Execution.objects.create(
        id="exec_x", client=client, session_key="s", message="m", fee_usd=Decimal("3.20")
    )
    assert billing.fee_for_plan(task_count=4, estimated_cost=Decimal("0")) == Decimal("3.20")
    assert billing.refund_for(execution, "partial", seed_tasks()) == Decimal("1.92")


@pytest.mark.django_db
def test_the_active_policy_decides_and_only_one_is_active(client_and_key):
    client, _ = client_and_key
    execution = Execution.objects.create(
        id="exec_y", client=client, session_key="s", message="m", fee_usd=Decimal("3.20")
    )
    RefundPolicy.objects.create(name="generous", is_active=True, factor=Decimal("1"), share_rule="count")
    assert RefundPolicy.objects.filter(is_active=True).count() == 1
    assert billing.refund_for(execution, "partial", seed_tasks()) == Decimal("1.60")
    PricingPolicy.objects.create(
        name="flat", is_active=True, fee_per_task=Decimal("1.00"), minimum_fee=Decimal("5")
    )
    assert billing.fee_for_plan(task_count=4, estimated_cost=Decimal("0")) == Decimal("5.00")


def stored_seed_execution(client, execution_id: str, extra_tasks: int = 0) -> Execution:
    """The seed's plan stored with backend and security dead, each task's result holding a big file,
    and `extra_tasks` more succeeded tasks of no weight (they change nothing in the refund)."""
    execution = Execution.objects.create(
        id=execution_id, client=client, session_key="s", message="m", fee_usd=Decimal("3.20")
    )
    big = {"summary": "done", "files": [{"path": "app.py", "content": "x" * 200_000}]}
    tasks = seed_tasks() + [
        Task(key=f"extra_{i}", weight=0, kind="plan", started_at=NOW, status=TaskStatus.SUCCEEDED)
        for i in range(extra_tasks)
    ]
    for task in tasks:
        task.execution, task.pool, task.description, task.result = execution, "codegen", task.key, big
    Task.objects.bulk_create(tasks)
    return execution


@pytest.mark.django_db
def test_a_settlement_reads_no_task_result_and_its_queries_do_not_grow_with_the_tasks(
    client_and_key, django_assert_num_queries
):
    client, _ = client_and_key
    small, large = stored_seed_execution(client, "exec_s"), stored_seed_execution(client, "exec_l", 40)
    with CaptureQueriesContext(connection) as first:
        assert billing.settle(small, "partial") == Decimal("1.92")  # the seed's 60 % of $3.20
    with django_assert_num_queries(len(first.captured_queries)) as second:
        assert billing.settle(large, "partial") == Decimal("1.92")
    task_reads = [q["sql"] for q in second.captured_queries if 'FROM "executions_task"' in q["sql"]]
    assert len(task_reads) == 1 and '"result"' not in task_reads[0]
    large.refresh_from_db()  # as `finish` does, in the settlement's transaction
    assert billing.settle(large, "partial") == Decimal("1.92")  # settled once: no second entry
    assert LedgerEntry.objects.filter(execution=large, kind="refund").count() == 1
