"""A budget that runs out mid-execution, with real workers."""

from decimal import Decimal

from executions.models import LedgerEntry, Task
from pools.models import ModelProfile, WorkerPool
from tests.conftest import configure, wait_for_status

REQUEST = "Build a restaurant website with online booking and secure payments"


def test_a_budget_cut_mid_execution(workers, client_and_key, client):
    """Frontend, backend and database fit the $1 budget; the security audit, on a model at $1000 per
    Mtok, does not. It is cancelled when backend finishes, while the frontend still runs and then
    completes: the execution ends budget_exceeded with three of four tasks and 90% of 120/315 back."""
    from executions.services import execution_create

    configure(latency=0.2, options={"latency_rules": [{"match": "frontend", "latency_sec": 1.5}]})
    pricey = ModelProfile.objects.create(
        name="pricey",
        provider="offline",
        model="offline-pricey",
        input_per_mtok=Decimal("1000"),
        output_per_mtok=Decimal("1000"),
    )
    WorkerPool.objects.filter(name="security").update(model=pricey)
    owner, raw = client_and_key
    execution = execution_create(
        client=owner, message=REQUEST, session_key="budget", mode="parallel", budget_usd=Decimal("1.00")
    )
    done = wait_for_status(execution.pk, {"completed", "partial", "failed", "budget_exceeded"}, timeout=30)

    assert done.status == "budget_exceeded"
    tasks = {t.key: t for t in Task.objects.filter(execution=done)}
    assert {k: t.status for k, t in tasks.items()} == {
        "task_1": "succeeded",
        "task_2": "succeeded",
        "task_3": "succeeded",
        "task_4": "cancelled",
    }
    assert tasks["task_4"].stop_reason == "budget" and not tasks["task_4"].attempts.exists()
    assert (
        tasks["task_1"].finished_at > tasks["task_4"].finished_at
    )  # the running frontend finished after the stop
    assert done.cost_usd <= done.budget_usd
    assert done.estimated_cost_usd > done.budget_usd  # the estimate said so before work started
    assert done.fee_usd == Decimal("3.20")
    assert done.refund_usd == Decimal("1.10")  # 3.20 × 0.9 × 120/315 = 1.097
    assert LedgerEntry.objects.get(execution=done, kind="refund").amount_usd == Decimal("1.10")
    assert "budget" in done.final_response.lower()
    # The budget is spent: the answer is written without a synthesis call.
    assert not LedgerEntry.objects.filter(execution=done, key__startswith="usage:synthesis:").exists()
    assert done.final_response.endswith("**Refund:** $1.10")

    invoice = client.get(f"/api/execution/{done.pk}/invoice", HTTP_X_API_KEY=raw).json()
    assert (invoice["totals"]["fee_usd"], invoice["totals"]["refund_usd"], invoice["net_usd"]) == (
        "3.20",
        "1.10",
        "2.10",
    )
    assert Decimal(invoice["totals"]["usage_usd"]) == done.cost_usd
