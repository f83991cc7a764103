"""The ledger: exactly-once entries under redelivery, and an invoice that agrees with it to the cent."""

from decimal import Decimal

import pytest
from django.db.models import Sum

from executions import billing
from executions.models import ApiKey, Attempt, Client, Execution, LedgerEntry, Task
from executions.states import TaskStatus
from pools import llm
from tests.conftest import configure

REQUEST = "Build a restaurant website with online booking and secure payments"


def run_in_process(execution_id: str) -> Execution:
    """Drive an execution with the actor bodies in this process (no workers): plan, every queued
    task's message, aggregation."""
    from executions.actors import run_task
    from executions.planning import execution_plan
    from executions.result_aggregator import aggregate

    execution_plan(execution_id)
    for _ in range(50):
        queued = list(
            Task.objects.filter(execution_id=execution_id, status=TaskStatus.QUEUED).values_list(
                "id", "dispatch_count"
            )
        )
        if not queued:
            break
        for task_id, dispatch_no in queued:
            run_task.fn(task_id, dispatch_no)
    aggregate(execution_id)
    return Execution.objects.get(pk=execution_id)


@pytest.mark.django_db
def test_record_usage_twice_charges_once(client_and_key):
    client, _ = client_and_key
    execution = Execution.objects.create(id="exec_u", client=client, session_key="s", message="m")
    task = Task.objects.create(execution=execution, key="task_1", pool="codegen", description="d")
    attempt = Attempt.objects.create(
        task=task, number=1, lease_expires_at=execution.created_at, deadline_at=execution.created_at
    )
    spec = llm.ModelSpec(
        name="m", provider="offline", model="x", input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("1.2")
    )
    completion = llm.Completion(text="{}", input_tokens=1234, output_tokens=567)
    usage = billing.AttemptUsage.of(spec, completion)
    assert billing.record_usage(attempt, usage) is True
    assert billing.record_usage(attempt, usage) is False
    entry = LedgerEntry.objects.get(execution=execution)
    # 1234 × 0.3 + 567 × 1.2 = 1050.6 per million: kept to the micro-dollar
    assert entry.key == f"usage:{attempt.pk}:1" and entry.amount_usd == Decimal("0.001051")
    execution.refresh_from_db()
    task.refresh_from_db()
    assert execution.cost_usd == task.cost_usd == entry.amount_usd
    assert (execution.tokens_in, execution.tokens_out) == (1234, 567)


def test_a_redelivered_message_and_a_repeated_report_charge_nothing(
    transactional_db, redis_server, client_and_key
):
    from executions.actors import run_task
    from executions.attempts import attempt_succeed
    from executions.planning import execution_plan
    from executions.services import execution_create

    configure(latency=0.0)
    client, _ = client_and_key
    execution = execution_create(client=client, message=REQUEST, session_key="redelivery")
    execution_plan(execution.pk)
    task = Task.objects.filter(execution=execution, status=TaskStatus.QUEUED).first()
    run_task.fn(task.pk, task.dispatch_count)
    run_task.fn(task.pk, task.dispatch_count)  # Redis redelivers the same message
    attempt = Attempt.objects.get(task=task)
    assert attempt.status == "succeeded"
    ledger_before = list(LedgerEntry.objects.filter(execution=execution).values_list("key", "amount_usd"))
    cost_before = Execution.objects.get(pk=execution.pk).cost_usd
    # The worker reports the same attempt again (a retried report after a lost reply).
    spec = llm.resolve(None)
    assert (
        attempt_succeed(
            attempt.pk,
            result={"summary": "again", "files": [], "findings": []},
            usage=billing.AttemptUsage.of(spec, llm.Completion(text="x", input_tokens=10, output_tokens=10)),
        ).recorded
        is False
    )
    assert (
        list(LedgerEntry.objects.filter(execution=execution).values_list("key", "amount_usd"))
        == ledger_before
    )
    assert Execution.objects.get(pk=execution.pk).cost_usd == cost_before
    assert LedgerEntry.objects.filter(key=f"usage:{attempt.pk}:1").count() == 1


def test_invoice_agrees_with_the_ledger_and_the_execution(
    transactional_db, redis_server, client_and_key, client
):
    """The seed's scenario end to end: backend dies, security is blocked → 60% of $3.20 back."""
    from executions.services import execution_create

    configure(latency=0.0, retries=0, options={"fail_rules": [{"match": "backend", "error": "fatal"}]})
    owner, raw = client_and_key
    execution = execution_create(client=owner, message=REQUEST, session_key="invoice", mode="parallel")
    execution = run_in_process(execution.pk)
    assert execution.status == "partial"

    response = client.get(f"/api/execution/{execution.pk}/invoice", HTTP_X_API_KEY=raw)
    assert response.status_code == 200
    invoice = response.json()
    sums = {
        row["kind"]: row["s"]
        for row in LedgerEntry.objects.filter(execution=execution)
        .values("kind")
        .annotate(s=Sum("amount_usd"))
    }
    totals = invoice["totals"]
    assert Decimal(totals["fee_usd"]) == sums["fee"] == execution.fee_usd == Decimal("3.20")
    assert Decimal(totals["refund_usd"]) == sums["refund"] == execution.refund_usd == Decimal("1.92")
    assert Decimal(totals["net_usd"]) == Decimal(invoice["net_usd"]) == Decimal("1.28")
    assert Decimal(totals["usage_usd"]) == sums["usage"] == execution.cost_usd > 0
    lines = invoice["lines"]
    assert sum(Decimal(line["amount_usd"]) for line in lines if line["billed"]) == Decimal("1.28")
    assert sum(Decimal(line["amount_usd"]) for line in lines if not line["billed"]) == execution.cost_usd
    # One usage line per attempt that used the model (the failed backend raised before any reply),
    # + the PM's calls.
    succeeded = Attempt.objects.filter(task__execution=execution, status="succeeded")
    assert {line["key"] for line in lines if line["kind"] == "usage"} == {
        f"usage:{a.pk}:1" for a in succeeded
    } | {f"usage:plan:{execution.pk}:0", f"usage:synthesis:{execution.pk}:0"}
    assert invoice["refund"]["share_of_fee"] == "0.6000"
    assert invoice["comparison"]["parallel"]["estimated"] is False
    assert invoice["comparison"]["serial"]["cost_usd"] == f"{execution.cost_usd:.6f}"
    detail = client.get(f"/api/execution/{execution.pk}", HTTP_X_API_KEY=raw).json()
    assert detail["fee_usd"] == "3.20" and detail["refund_usd"] == "1.92"
    assert detail["comparison"] == invoice["comparison"]
    assert Decimal(detail["estimated_cost_usd"]) > 0

    other = Client.objects.create(name="other")
    _, other_key = ApiKey.issue(other)
    assert client.get(f"/api/execution/{execution.pk}/invoice", HTTP_X_API_KEY=other_key).status_code == 404


def start_one_task(client) -> tuple[Task, Attempt]:
    from executions.attempts import task_start
    from tests.factories import make_execution, make_pools

    make_pools()
    execution = make_execution(client, [{"key": "backend"}])
    task = Task.objects.get(execution=execution)
    Task.objects.filter(pk=task.pk).update(status="queued", dispatch_count=1)
    return task, task_start(task.pk, 1, "w1", lease_sec=15)


@pytest.mark.django_db
def test_a_success_stores_its_usage_on_the_attempt_the_task_the_execution_and_the_ledger(client_and_key):
    from executions.attempts import attempt_succeed

    task, attempt = start_one_task(client_and_key[0])
    spec = llm.ModelSpec(
        name="m", provider="offline", model="x", input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("1.2")
    )
    completion = llm.Completion(text="{}", input_tokens=1234, output_tokens=567, cache_read_tokens=100)
    assert attempt_succeed(
        attempt.pk,
        result={"summary": "ok", "files": [], "findings": []},
        usage=billing.AttemptUsage.of(spec, completion),
    )
    attempt.refresh_from_db()
    task.refresh_from_db()
    entry = LedgerEntry.objects.get(key=f"usage:{attempt.pk}:1")
    execution = Execution.objects.get(pk=task.execution_id)
    assert entry.amount_usd == attempt.cost_usd == task.cost_usd == execution.cost_usd == Decimal("0.001051")
    assert (attempt.tokens_in, attempt.tokens_out, attempt.cache_read_tokens) == (1234, 567, 100)
    assert (task.tokens_in, task.tokens_out) == (execution.tokens_in, execution.tokens_out) == (1234, 567)
    assert (attempt.model, attempt.provider, entry.client_id) == (spec.label, "offline", execution.client_id)


@pytest.mark.django_db
def test_a_report_after_the_reaper_expired_the_attempt_is_charged_once(
    client_and_key, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from executions.attempts import attempt_succeed
    from executions.reaper import reap

    task, attempt = start_one_task(client_and_key[0])
    Attempt.objects.filter(pk=attempt.pk).update(deadline_at=timezone.now() - timedelta(seconds=30))
    with django_capture_on_commit_callbacks(execute=False):
        assert reap()["expired"] == 1
    spec = llm.resolve(None)
    completion = llm.Completion(text="{}", input_tokens=1000, output_tokens=500)
    # The worker was slow, not gone: its tokens were spent and are billed, its result is not used.
    for _ in range(2):
        assert (
            attempt_succeed(
                attempt.pk,
                result={"summary": "late", "files": [], "findings": []},
                usage=billing.AttemptUsage.of(spec, completion),
            ).recorded
            is False
        )
    attempt.refresh_from_db()
    task.refresh_from_db()
    assert attempt.status == "expired" and task.result == {}
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert (attempt.tokens_in, task.tokens_in, Execution.objects.get(pk=task.execution_id).tokens_in) == (
        1000,
    ) * 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "speedup"), [("completed", 50.0), ("cancelled", None), ("budget_exceeded", None)]
)
def test_the_speedup_is_stated_only_for_work_run_to_its_end(client_and_key, status, speedup):
    from datetime import timedelta

    from django.utils import timezone

    from executions.invoices import execution_comparison

    client, _ = client_and_key
    start = timezone.now()
    execution = Execution.objects.create(
        id=f"exec_{status}",
        client=client,
        session_key="s",
        message="m",
        status=status,
        mode="parallel",
        started_at=start,
        finished_at=start + timedelta(seconds=2),
    )
    for key in ("a", "b"):  # two 2-second tasks side by side: 4 s of work in 2 s
        task = Task.objects.create(execution=execution, key=key, pool="codegen", description=key)
        end = start + timedelta(seconds=2)
        task.attempts.create(
            number=1, started_at=start, finished_at=end, lease_expires_at=end, deadline_at=end
        )

    comparison = execution_comparison(execution)

    assert comparison["serial"]["duration_sec"] == 4.0 and comparison["parallel"]["duration_sec"] == 2.0
    assert comparison["speedup_pct"] == speedup
