"""A turn of an agent's loop is billed in one transaction that also says whether the loop may make
another call: exactly once per key, whatever the attempt's status, with the budget counting the
turn just billed and one more like it."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import billing
from executions.models import Attempt, AttemptTurn, Execution, LedgerEntry, Task
from executions.states import AttemptStatus
from pools import llm

# $0.30 and $1.20 per million tokens: a turn of 1234 in and 567 out costs $0.001051 (rounded from
# 0.0010506), so sums of many turns show any drift between the ledger and the totals.
SPEC = llm.ModelSpec(
    name="m", provider="offline", model="x", input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("1.2")
)


@pytest.fixture
def attempt(client_and_key):
    client, _ = client_and_key
    execution = Execution.objects.create(id="exec_turns", client=client, session_key="s", message="m")
    task = Task.objects.create(execution=execution, key="task_1", pool="codegen", description="d")
    now = timezone.now()
    return Attempt.objects.select_related("task").get(
        pk=Attempt.objects.create(
            task=task, number=1, status=AttemptStatus.RUNNING, lease_expires_at=now, deadline_at=now
        ).pk
    )


def turn(number: int, tokens_in: int = 1234, tokens_out: int = 567) -> billing.AttemptUsage:
    completion = llm.Completion(text=f"turn {number}", input_tokens=tokens_in, output_tokens=tokens_out)
    return billing.AttemptUsage.of(SPEC, completion, number, {"text": f"turn {number}", "duration_sec": 0.5})


def bill(attempt: Attempt, usage: billing.AttemptUsage) -> billing.TurnVerdict:
    return billing.record_turn(attempt, usage, attempt.task.execution.client_id)


def totals(attempt: Attempt) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """The execution's, task's and attempt's cost, the ledger's usage and the transcript's, as stored."""
    execution = Execution.objects.get(pk=attempt.task.execution_id)
    ledger = sum(e.amount_usd for e in LedgerEntry.objects.filter(execution=execution, kind="usage"))
    turns = sum(t.cost_usd for t in AttemptTurn.objects.filter(attempt=attempt))
    return (
        execution.cost_usd,
        Task.objects.get(pk=attempt.task_id).cost_usd,
        Attempt.objects.get(pk=attempt.pk).cost_usd,
        ledger,
        turns,
    )


def test_a_turn_recorded_twice_is_billed_and_kept_once(attempt):
    first = bill(attempt, turn(2))
    again = bill(attempt, turn(2))
    assert (first.billed, again.billed) == (True, False)
    assert again.running and again.next_allowed  # the repeat still answers for the next call
    assert list(LedgerEntry.objects.values_list("key", flat=True)) == [f"usage:{attempt.pk}:2"]
    kept = AttemptTurn.objects.get(attempt=attempt)
    assert (kept.number, kept.text, kept.duration_sec, kept.tokens_in) == (2, "turn 2", 0.5, 1234)
    assert totals(attempt) == (Decimal("0.001051"),) * 5
    stored = Attempt.objects.get(pk=attempt.pk)
    assert (stored.tokens_in, stored.tokens_out, stored.model) == (1234, 567, SPEC.label)


def test_every_total_agrees_with_the_ledger_over_many_turns(attempt):
    for number in range(1, 41):
        assert bill(attempt, turn(number, 1234 + number, 567 + 3 * number)).billed
    execution_cost, task_cost, attempt_cost, ledger, turns = totals(attempt)
    assert execution_cost == task_cost == attempt_cost == ledger == turns
    assert ledger == sum((turn(n, 1234 + n, 567 + 3 * n).cost for n in range(1, 41)), Decimal("0"))


def test_a_call_that_returns_after_a_cancel_is_billed_and_the_loop_stops(attempt):
    Attempt.objects.filter(pk=attempt.pk).update(status=AttemptStatus.CANCELLED)
    verdict = bill(attempt, turn(3))
    assert verdict.billed and not verdict.running
    assert LedgerEntry.objects.filter(key=f"usage:{attempt.pk}:3").exists()
    again = bill(attempt, turn(3))
    assert not again.billed and not again.running


def test_the_budget_allows_the_next_call_only_if_spent_plus_one_more_like_this_fits(attempt):
    # Two turns of $0.001051 already spent; this one makes three. A fourth must fit too.
    Execution.objects.filter(pk=attempt.task.execution_id).update(
        cost_usd=Decimal("0.002102"), budget_usd=Decimal("0.01")
    )
    assert bill(attempt, turn(3)).next_allowed  # 0.003153 + 0.001051 ≤ 0.01
    Execution.objects.filter(pk=attempt.task.execution_id).update(
        cost_usd=Decimal("0.007898"), budget_usd=Decimal("0.01")
    )
    # 0.008949 spent: another 0.001051 makes exactly 0.01, which is within the budget.
    assert bill(attempt, turn(4)).next_allowed
    # 0.01 spent: the next one would pass it.
    verdict = bill(attempt, turn(5))
    assert verdict.billed and verdict.running and not verdict.next_allowed
    # A repeat of a billed turn reads the same answer.
    assert not bill(attempt, turn(5)).next_allowed


def test_no_budget_never_stops_the_loop(attempt):
    Execution.objects.filter(pk=attempt.task.execution_id).update(cost_usd=Decimal("1000"), budget_usd=None)
    assert bill(attempt, turn(2)).next_allowed


def test_a_turn_is_one_transaction_of_five_statements_or_one(attempt):
    """The hot path of every turn: ledger entry, attempt, execution, task, transcript, nothing read
    first; on PostgreSQL the execution's row lock and then all of them in one statement."""
    client_id = attempt.task.execution.client_id
    with CaptureQueriesContext(connection) as captured:
        billing.record_turn(attempt, turn(2), client_id)
    statements = [q["sql"].split()[0].upper() for q in captured.captured_queries]
    statements = [s for s in statements if s not in {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}]
    if connection.vendor == "postgresql":
        assert statements == ["SELECT", "WITH"]
    else:
        assert statements == ["INSERT", "UPDATE", "UPDATE", "UPDATE", "INSERT"]
