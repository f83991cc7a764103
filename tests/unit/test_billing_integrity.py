"""Every model call is billed once, whatever happens to the phase that made it: a planner that finds
the phase leased calls nothing, a planner whose lease lapsed and its successor both pay, a planning
error or a cancel still bills the PM call, a retry's synthesis gets a key of its own, refunds follow
the server's weights, and the invoice adds up to the calls the model really answered."""

import json
import math
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from executions import billing
from executions.models import Event, Execution, LedgerEntry, Task
from executions.planning import execution_plan
from executions.services import execution_cancel, execution_create, execution_retry
from executions.states import TaskKind, TaskStatus
from executions.task_distributor import ROLE_WEIGHTS
from executions.transitions import claim_phase
from pools import llm
from pools.offline import OfflineProvider
from tests.conftest import configure
from tests.factories import make_client, make_execution, make_pools

REQUEST = "Build a restaurant website with online booking and secure payments"


def spy_on_the_model(monkeypatch, *, plan_reply: str | None = None, before_plan_reply=None) -> list:
    """Wrap `pools.llm.complete`: every answered call is recorded as (purpose, spec, completion).
    `plan_reply` stands in for the PM's answer; `before_plan_reply()` runs while a PM call is
    in flight (another worker or the client acting meanwhile)."""
    calls: list = []
    real = llm.complete

    def complete(spec, request, on_progress=None):
        if request.purpose == "plan" and before_plan_reply is not None:
            before_plan_reply()
        if request.purpose == "plan" and plan_reply is not None:
            completion = llm.Completion(text=plan_reply, input_tokens=1200, output_tokens=450)
        else:
            completion = real(spec, request, on_progress)
        calls.append((request.purpose, spec, completion))
        return completion

    monkeypatch.setattr(llm, "complete", complete)
    return calls


def plan_entries(execution_id: str) -> dict[str, Decimal]:
    return dict(
        LedgerEntry.objects.filter(execution_id=execution_id, key__startswith="usage:plan:").values_list(
            "key", "amount_usd"
        )
    )


def synthesis_keys(execution_id: str) -> list[str]:
    return sorted(
        LedgerEntry.objects.filter(execution_id=execution_id, key__startswith="usage:synthesis:").values_list(
            "key", flat=True
        )
    )


def billed(calls: list, purpose: str = "plan") -> list[Decimal]:
    return sorted(billing.micro(spec.cost(c)) for p, spec, c in calls if p == purpose)


@pytest.fixture
def planning_execution(db):
    configure(latency=0.0)
    client, raw = make_client()
    execution = execution_create(client=client, message=REQUEST, session_key="billing")
    return execution, raw


# ---------------------------------------------------------------- item 1: planning runs at once


def test_a_planner_that_finds_the_phase_leased_calls_no_model_until_the_lease_lapses(
    planning_execution, monkeypatch
):
    execution, _ = planning_execution
    assert claim_phase(execution.pk, "planning", lease_sec=150) == 1  # another worker is planning
    calls = spy_on_the_model(monkeypatch)

    assert execution_plan(execution.pk) is False
    assert calls == []
    assert Execution.objects.get(pk=execution.pk).status == "planning"
    assert not LedgerEntry.objects.filter(execution=execution).exists()

    Execution.objects.filter(pk=execution.pk).update(phase_lease_until=timezone.now() - timedelta(seconds=1))
    assert execution_plan(execution.pk) is True
    assert [purpose for purpose, _, _ in calls] == ["plan"]
    assert Execution.objects.get(pk=execution.pk).status == "executing"
    assert sorted(plan_entries(execution.pk).values()) == billed(calls)


def test_a_planner_whose_lease_lapsed_and_its_successor_both_bill_their_pm_calls(
    planning_execution, monkeypatch
):
    execution, _ = planning_execution
    successor: list[bool] = []

    def lease_lapses_and_another_worker_plans():
        if successor:
            return
        successor.append(None)  # placeholder: the successor's own PM call comes back through here
        Execution.objects.filter(pk=execution.pk).update(
            phase_lease_until=timezone.now() - timedelta(seconds=1)
        )
        successor[0] = execution_plan(execution.pk)

    calls = spy_on_the_model(monkeypatch, before_plan_reply=lease_lapses_and_another_worker_plans)
    assert execution_plan(execution.pk) is False  # the slow first worker's plan is not kept
    assert successor == [True]

    execution.refresh_from_db()
    entries = plan_entries(execution.pk)
    assert len(calls) == 2 and len(entries) == 2
    assert f"usage:plan:{execution.pk}:0" in entries  # the first claim's call
    assert sorted(entries.values()) == billed(calls)
    assert execution.cost_usd == sum(entries.values())
    # One plan kept: its tasks and its fee once.
    assert Task.objects.filter(execution=execution).count() == len(execution.plan["tasks"]) > 0
    assert LedgerEntry.objects.filter(execution=execution, kind="fee").count() == 1


# ---------------------------------------------------------------- item 2: a plan or a planner that breaks


def plan_with_estimate(estimate) -> str:
    return json.dumps(
        {
            "tasks": [
                {
                    "id": "api",
                    "pool": "codegen",
                    "description": "Build the booking API",
                    "context": {"estimate_sec": estimate, "stack": "fastapi"},
                },
                {
                    "id": "audit",
                    "pool": "security",
                    "description": "Audit the booking API",
                    "blocked_by": ["api"],
                    "context": {"estimate_sec": 30},
                },
            ]
        }
    )


@pytest.mark.parametrize("estimate", ["2h", math.nan, math.inf, -math.inf, -5, True, 86_401])
def test_an_implausible_estimate_is_dropped_with_a_note_and_the_plan_goes_ahead(
    planning_execution, monkeypatch, client, estimate
):
    execution, raw = planning_execution
    calls = spy_on_the_model(monkeypatch, plan_reply=plan_with_estimate(estimate))

    assert execution_plan(execution.pk) is True
    execution.refresh_from_db()
    assert execution.status == "executing" and execution.plan_source == "model"
    assert any(note.startswith("api: estimate_sec") and "dropped" in note for note in execution.plan_notes)
    tasks = {t.key: t for t in Task.objects.filter(execution=execution)}
    assert tasks["api"].context == {"stack": "fastapi"}
    assert tasks["audit"].context == {"estimate_sec": 30}  # a plausible one is kept
    response = client.get(f"/api/execution/{execution.pk}/invoice", HTTP_X_API_KEY=raw)
    assert response.status_code == 200
    assert response.json()["totals"]["fee_usd"] == "1.60"
    assert sorted(plan_entries(execution.pk).values()) == billed(calls)


def test_a_planning_error_ends_the_execution_failed_with_the_reason_and_bills_the_pm_call(
    planning_execution, monkeypatch
):
    execution, _ = planning_execution
    calls = spy_on_the_model(monkeypatch)

    def explode(*args, **kwargs):
        raise RuntimeError("makespan exploded")

    monkeypatch.setattr("executions.planning.simulate_makespan", explode)
    execution_plan(execution.pk)

    execution.refresh_from_db()
    assert execution.status == "failed"
    assert execution.error == "planning failed: RuntimeError: makespan exploded"
    assert execution.finished_at is not None and "could not be planned" in execution.final_response
    entries = plan_entries(execution.pk)
    assert list(entries) == [f"usage:plan:{execution.pk}:0"]
    assert (
        list(entries.values()) == billed(calls)
        and execution.cost_usd == entries[f"usage:plan:{execution.pk}:0"]
    )
    assert not LedgerEntry.objects.filter(execution=execution, kind="fee").exists()
    finished = Event.objects.get(execution=execution, type="execution.finished")
    assert finished.payload["status"] == "failed"
    # The message delivered again finds the execution settled: no second PM call, no second charge.
    assert execution_plan(execution.pk) is False
    assert len(calls) == 1 and plan_entries(execution.pk) == entries


# ---------------------------------------------------------------- item 3: cancel, retry


def test_a_cancel_during_the_pm_call_loses_the_plan_but_bills_the_call_once(planning_execution, monkeypatch):
    execution, _ = planning_execution

    def client_cancels():
        assert execution_cancel(Execution.objects.get(pk=execution.pk)) is True

    calls = spy_on_the_model(monkeypatch, before_plan_reply=client_cancels)
    assert execution_plan(execution.pk) is False

    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert not Task.objects.filter(execution=execution).exists()
    entries = plan_entries(execution.pk)
    assert list(entries) == [f"usage:plan:{execution.pk}:0"]
    assert list(entries.values()) == billed(calls) and execution.cost_usd == sum(entries.values())
    assert not LedgerEntry.objects.filter(execution=execution, kind="fee").exists()
    assert execution_plan(execution.pk) is False
    assert len(calls) == 1 and plan_entries(execution.pk) == entries


@pytest.mark.parametrize(
    "status,tasks",
    [
        ("partial", [{"key": "done", "status": "succeeded"}, {"key": "stopped", "status": "cancelled"}]),
        ("failed", []),  # planning failed: no task at all
    ],
)
def test_a_retry_with_nothing_to_reopen_changes_nothing(db, status, tasks):
    make_pools()
    client, _ = make_client()
    execution = make_execution(client, tasks, status=status)
    Execution.objects.filter(pk=execution.pk).update(
        finished_at=timezone.now(), final_response="## As it ended", quality_score=0.5
    )
    fields = ("status", "finished_at", "final_response", "quality_score", "retries")
    before = Execution.objects.filter(pk=execution.pk).values(*fields).get()
    events_before = Event.objects.filter(execution=execution).count()
    statuses_before = dict(Task.objects.filter(execution=execution).values_list("key", "status"))

    assert execution_retry(execution) == 0

    assert Execution.objects.filter(pk=execution.pk).values(*fields).get() == before
    assert Event.objects.filter(execution=execution).count() == events_before
    assert dict(Task.objects.filter(execution=execution).values_list("key", "status")) == statuses_before


def test_retries_beyond_the_cap_reopen_nothing(db, settings):
    settings.OPENCLAW_MAX_RETRIES_PER_EXECUTION = 2
    make_pools()
    client, _ = make_client()
    execution = make_execution(
        client,
        [{"key": "done", "status": "succeeded"}, {"key": "backend", "status": "dead"}],
        status="partial",
    )
    for number in (1, 2):
        assert execution_retry(execution) == 1
        assert Execution.objects.get(pk=execution.pk).retries == number
        # The rerun dies again and the execution ends partial again.
        Task.objects.filter(execution=execution, key="backend").update(status=TaskStatus.DEAD)
        Execution.objects.filter(pk=execution.pk).update(status="partial")

    assert execution_retry(execution) == 0
    execution.refresh_from_db()
    assert (execution.status, execution.retries) == ("partial", 2)
    assert Task.objects.get(execution=execution, key="backend").status == "dead"


def run_tasks_and_aggregate(execution_id: str) -> Execution:
    """The actor bodies in this process (no workers): every queued task's message, then aggregation."""
    from executions.actors import run_task
    from executions.result_aggregator import aggregate

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


def run_to_the_end(client, message: str = REQUEST, session_key: str = "ledger") -> Execution:
    execution = execution_create(client=client, message=message, session_key=session_key, mode="parallel")
    execution_plan(execution.pk)
    return run_tasks_and_aggregate(execution.pk)


def backend_dies(**options) -> None:
    configure(
        latency=0.0, retries=0, options={"fail_rules": [{"match": "backend", "error": "fatal"}], **options}
    )


def test_the_synthesis_after_a_retry_is_billed_under_a_new_key(
    transactional_db, redis_server, client_and_key
):
    backend_dies()
    execution = run_to_the_end(client_and_key[0])
    assert execution.status == "partial"
    [first] = synthesis_keys(execution.pk)

    assert execution_retry(execution) == 2  # the dead backend and the audit it blocked
    execution = run_tasks_and_aggregate(execution.pk)
    assert (execution.status, execution.retries) == ("partial", 1)

    keys = synthesis_keys(execution.pk)
    assert len(keys) == 2 and first in keys
    amounts = LedgerEntry.objects.filter(key__in=keys).values_list("amount_usd", flat=True)
    assert all(amount > 0 for amount in amounts)
    usage = sum(
        LedgerEntry.objects.filter(execution=execution, kind="usage").values_list("amount_usd", flat=True)
    )
    assert execution.cost_usd == usage


def test_the_first_aggregations_synthesis_has_the_first_key(transactional_db, redis_server, client_and_key):
    backend_dies()
    execution = run_to_the_end(client_and_key[0])
    assert synthesis_keys(execution.pk) == [f"usage:synthesis:{execution.pk}:0"]


# ---------------------------------------------------------------- item 4: refund weights


def plan_with_estimates(dying: float, others: float) -> str:
    return json.dumps(
        {
            "tasks": [
                {
                    "id": "pages",
                    "pool": "codegen",
                    "description": "Build the booking pages",
                    "context": {"estimate_sec": others},
                },
                {
                    "id": "api",
                    "pool": "codegen",
                    "description": "Build the backend booking API",
                    "context": {"estimate_sec": dying},
                },
                {
                    "id": "audit",
                    "pool": "security",
                    "description": "Audit the payment flow",
                    "blocked_by": ["api"],
                    "context": {"estimate_sec": others},
                },
            ]
        }
    )


@pytest.mark.parametrize("huge", [1e6, 86_400.0])
def test_the_models_estimates_change_neither_the_weights_nor_the_refund(
    transactional_db, redis_server, client_and_key, monkeypatch, huge
):
    backend_dies()
    outcomes = []
    for n, (dying, others) in enumerate([(huge, 60.0), (0.001, 60.0)]):
        spy_on_the_model(monkeypatch, plan_reply=plan_with_estimates(dying, others))
        execution = run_to_the_end(client_and_key[0], session_key=f"weights{n}")
        assert execution.status == "partial"
        tasks = {t.key: t for t in Task.objects.filter(execution=execution, kind=TaskKind.PLAN)}
        assert (tasks["api"].status, tasks["audit"].status) == ("dead", "blocked")
        if huge <= 86_400:  # a plausible number reaches the task; it still does not weigh
            assert tasks["api"].context["estimate_sec"] == dying
        outcomes.append(({key: t.weight for key, t in tasks.items()}, execution.refund_usd))

    (weights_a, refund_a), (weights_b, refund_b) = outcomes
    assert (
        weights_a
        == weights_b
        == {
            "pages": ROLE_WEIGHTS["codegen"],
            "api": ROLE_WEIGHTS["codegen"],
            "audit": ROLE_WEIGHTS["security"],
        }
    )
    assert refund_a == refund_b > 0


# ---------------------------------------------------------------- the invoice against the calls


def test_the_invoice_is_the_model_calls_plus_the_fee_less_the_refund(
    transactional_db, redis_server, client_and_key, client, monkeypatch
):
    calls: list = []  # (spec, completion) of every call the provider answered
    real = OfflineProvider.complete

    def counted(self, spec, request, on_progress=None):
        completion = real(self, spec, request, on_progress)
        calls.append((spec, completion))
        return completion

    monkeypatch.setattr(OfflineProvider, "complete", counted)
    backend_dies()
    owner, raw = client_and_key
    execution = run_to_the_end(owner, session_key="invoice")
    assert execution.status == "partial"

    invoice = client.get(f"/api/execution/{execution.pk}/invoice", HTTP_X_API_KEY=raw).json()
    totals = invoice["totals"]
    planned = list(Task.objects.filter(execution=execution, kind=TaskKind.PLAN))
    fee = Decimal("0.80") * len(planned)  # the default pricing: per planned task
    lost = sum(t.weight for t in planned if t.status != TaskStatus.SUCCEEDED)
    share = Decimal(str(lost)) / Decimal(str(sum(t.weight for t in planned)))
    refund = billing.money(fee * Decimal("0.9") * share)  # the default refund: 90% of the undelivered share
    model_cost = sum((spec.cost(completion) for spec, completion in calls), Decimal("0"))

    assert (Decimal(totals["fee_usd"]), Decimal(totals["refund_usd"])) == (fee, refund) and refund > 0
    invoice_total = Decimal(totals["usage_usd"]) + Decimal(totals["net_usd"])
    assert billing.money(invoice_total) == billing.money(model_cost + fee - refund)
    assert Decimal(totals["usage_usd"]) == sum(billing.micro(spec.cost(c)) for spec, c in calls)
    assert LedgerEntry.objects.filter(execution=execution, kind="usage").count() == len(calls) > 0
