"""Billing: usage per attempt, the project fee, refunds by policy; every entry exactly once.

Ledger keys make entries idempotent: `usage:<attempt id>`, `usage:<phase>:<execution id>:<n>` for
the PM's own calls, `fee:<execution id>`, `refund:<execution id>:<settlement>`.

Default policies (until refund policies become configurable in the admin):
- fee: $0.80 per planned task (the seed's restaurant project: 4 tasks → $3.20);
- refund: `completed` nothing; `failed` the whole fee; `partial` and `budget_exceeded` 90% of the
  undelivered share of the work by estimated duration (the seed's example: backend 90 s and
  security 120 s undelivered of 315 s → 0.9 × 210/315 = 60%); `cancelled` nothing.
"""

from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Sum

from pools.llm import Completion, ModelSpec

from .models import Attempt, Execution, LedgerEntry, Task, TaskStatus

CENT = Decimal("0.01")
FEE_PER_TASK = Decimal("0.80")
PARTIAL_REFUND_FACTOR = Decimal("0.9")


def money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _create_once(**fields) -> LedgerEntry | None:
    """Insert a ledger entry unless its key exists; None when it already did."""
    if LedgerEntry.objects.filter(key=fields["key"]).exists():
        return None
    try:
        with transaction.atomic():
            return LedgerEntry.objects.create(**fields)
    except IntegrityError:
        return None


def record_usage(attempt: Attempt, spec: ModelSpec, completion: Completion) -> bool:
    """Charge one attempt's tokens; a redelivered message or second report charges nothing."""
    task = attempt.task
    cost = spec.cost(completion)
    entry = _create_once(
        execution_id=task.execution_id, client_id=Execution.objects.values_list("client_id", flat=True).get(pk=task.execution_id),
        kind="usage", key=f"usage:{attempt.pk}", amount_usd=cost, attempt=attempt, pool=task.pool, model=spec.label,
        tokens_in=completion.input_tokens, tokens_out=completion.output_tokens,
        cache_read_tokens=completion.cache_read_tokens, cache_write_tokens=completion.cache_write_tokens,
        description=f"{task.key} attempt {attempt.number}",
    )
    if entry is None:
        return False
    Attempt.objects.filter(pk=attempt.pk).update(
        tokens_in=completion.input_tokens, tokens_out=completion.output_tokens,
        cache_read_tokens=completion.cache_read_tokens, cache_write_tokens=completion.cache_write_tokens,
        cost_usd=cost, model=spec.label, provider=spec.provider,
    )
    Task.objects.filter(pk=task.pk).update(tokens_in=F("tokens_in") + completion.input_tokens,
                                           tokens_out=F("tokens_out") + completion.output_tokens,
                                           cost_usd=F("cost_usd") + cost)
    _add_to_execution(task.execution_id, cost, completion)
    return True


def record_phase_usage(execution: Execution, phase: str, index: int, spec: ModelSpec, completion: Completion) -> bool:
    """Charge the PM's own calls (planning, synthesis)."""
    cost = spec.cost(completion)
    entry = _create_once(
        execution=execution, client_id=execution.client_id, kind="usage", key=f"usage:{phase}:{execution.pk}:{index}",
        amount_usd=cost, pool="pm", model=spec.label, tokens_in=completion.input_tokens,
        tokens_out=completion.output_tokens, cache_read_tokens=completion.cache_read_tokens,
        cache_write_tokens=completion.cache_write_tokens, description=f"PM {phase}",
    )
    if entry is None:
        return False
    _add_to_execution(execution.pk, cost, completion)
    return True


def _add_to_execution(execution_id: str, cost: Decimal, completion: Completion) -> None:
    Execution.objects.filter(pk=execution_id).update(
        cost_usd=F("cost_usd") + cost, tokens_in=F("tokens_in") + completion.input_tokens,
        tokens_out=F("tokens_out") + completion.output_tokens,
    )


def fee_for_plan(task_count: int) -> Decimal:
    return money(FEE_PER_TASK * task_count)


def charge_fee(execution: Execution, fee: Decimal) -> None:
    if _create_once(execution=execution, client_id=execution.client_id, kind="fee", key=f"fee:{execution.pk}",
                    amount_usd=fee, description="project fee"):
        Execution.objects.filter(pk=execution.pk).update(fee_usd=fee)


def undelivered_share(tasks: list[Task]) -> Decimal:
    planned = [t for t in tasks if t.kind == "plan"]
    total = sum(t.weight for t in planned)
    if total <= 0:
        return Decimal("0")
    lost = sum(t.weight for t in planned if t.status != TaskStatus.SUCCEEDED)
    return Decimal(str(lost / total))


def refund_for(execution: Execution, status: str, tasks: list[Task]) -> Decimal:
    """What the client gets back when the execution ends in `status` (default policy)."""
    fee = execution.fee_usd
    if status == "failed":
        return money(fee)
    if status in ("partial", "budget_exceeded"):
        return money(fee * PARTIAL_REFUND_FACTOR * undelivered_share(tasks))
    return Decimal("0.00")


def settle(execution: Execution, status: str) -> Decimal:
    """Record the refund for a finished execution (once per settlement) and return it."""
    tasks = list(execution.tasks.all())
    settlement = LedgerEntry.objects.filter(execution=execution, kind="refund").count()
    owed = refund_for(execution, status, tasks)
    already = execution.refund_usd
    delta = owed - already
    if delta and _create_once(execution=execution, client_id=execution.client_id, kind="refund",
                              key=f"refund:{execution.pk}:{settlement}", amount_usd=delta,
                              description=f"refund ({status})"):
        total = LedgerEntry.objects.filter(execution=execution, kind="refund").aggregate(s=Sum("amount_usd"))["s"]
        Execution.objects.filter(pk=execution.pk).update(refund_usd=money(total or 0))
        return money(total or 0)
    return already


def budget_allows_dispatch(execution_id: str) -> bool:
    """Default budget rule: no new task starts once spending reaches the budget."""
    row = Execution.objects.filter(pk=execution_id).values("budget_usd", "cost_usd").first()
    return not row or row["budget_usd"] is None or row["cost_usd"] < row["budget_usd"]
