"""Read models for billing: an execution's invoice (straight from its ledger) and the serial vs
parallel comparison of the seed's cost tables."""

from decimal import Decimal

from django.db.models import Max, Min

from .billing import money, withheld
from .models import Attempt, Execution, RefundPolicy
from .states import ExecutionStatus


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def execution_invoice(execution: Execution) -> dict:
    """Every ledger entry as a line; totals are sums of those lines, so they agree with the ledger.

    Usage lines are the model cost, covered by the fee (`billed` false); the client pays the fee
    less refunds: `net_usd` is the sum of the billed lines.
    """
    totals = {"usage": Decimal("0"), "fee": Decimal("0"), "refund": Decimal("0")}
    lines = []
    for entry in execution.ledger.order_by("created_at", "id"):
        totals[entry.kind] += entry.amount_usd
        billed = entry.kind != "usage"
        amount = -entry.amount_usd if entry.kind == "refund" else entry.amount_usd
        lines.append(
            {
                "kind": entry.kind,
                "key": entry.key,
                "description": entry.description,
                "pool": entry.pool,
                "model": entry.model,
                "tokens_in": entry.tokens_in,
                "tokens_out": entry.tokens_out,
                "cache_read_tokens": entry.cache_read_tokens,
                "cache_write_tokens": entry.cache_write_tokens,
                "amount_usd": f"{money(amount):.2f}" if billed else f"{amount:.6f}",
                "billed": billed,
                "created_at": _iso(entry.created_at),
            }
        )
    fee, refund = money(totals["fee"]), money(totals["refund"])
    policy = RefundPolicy.current()
    tasks = list(execution.tasks.all())
    return {
        "execution_id": execution.pk,
        "client": execution.client.name,
        "status": execution.status,
        "currency": "USD",
        "lines": lines,
        "totals": {
            "usage_usd": f"{totals['usage']:.6f}",
            "fee_usd": f"{fee:.2f}",
            "refund_usd": f"{refund:.2f}",
            "net_usd": f"{fee - refund:.2f}",
            "tokens_in": execution.tokens_in,
            "tokens_out": execution.tokens_out,
            "estimated_cost_usd": _usd6(execution.estimated_cost_usd),
            "budget_usd": _usd2(execution.budget_usd),
        },
        "refund": {
            "usd": f"{refund:.2f}",
            "share_of_fee": f"{(refund / fee if fee else Decimal('0')):.4f}",
            "undelivered_share": f"{policy.undelivered_share(tasks, withheld(execution)):.4f}",
            "policy": policy.name,
            "rule": policy.get_share_rule_display(),
        },
        "net_usd": f"{fee - refund:.2f}",
        "comparison": execution_comparison(execution),
    }


def _usd6(value) -> str | None:
    return None if value is None else f"{value:.6f}"


def _usd2(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def execution_comparison(execution: Execution) -> dict:
    """Serial vs parallel for one execution, as in the seed's cost tables.

    The mode that ran is measured; the other is estimated from the same work: serial is the sum of
    every attempt's duration plus the PM's own time (planning, synthesis) the run spent outside the
    agents' work. Tokens and cost are the same in both: the same agents answer the same prompts.
    """
    span = Attempt.objects.filter(task__execution=execution, finished_at__isnull=False).aggregate(
        first=Min("started_at"), last=Max("finished_at")
    )
    work = sum(
        (a.finished_at - a.started_at).total_seconds()
        for a in Attempt.objects.filter(task__execution=execution, finished_at__isnull=False).only(
            "started_at", "finished_at"
        )
    )
    duration = execution.duration_sec if execution.finished_at else None
    overhead = 0.0
    if duration is not None and span["first"]:
        overhead = max(0.0, duration - (span["last"] - span["first"]).total_seconds())
    tasks = execution.tasks.count()
    usage = {"tokens": execution.tokens_in + execution.tokens_out, "cost_usd": f"{execution.cost_usd:.6f}"}
    if execution.mode == "serial":
        serial = {"duration_sec": duration, "estimated": False}
        parallel = {"duration_sec": None, "estimated": True}
    else:
        serial = {
            "duration_sec": round(work + overhead, 3) if duration is not None else None,
            "estimated": True,
        }
        parallel = {"duration_sec": duration, "estimated": False}
    speedup = None
    # A run stopped before its work was done is compared with nothing: its serial estimate is of
    # the work it did, not of the project.
    stopped = execution.status in (ExecutionStatus.CANCELLED, ExecutionStatus.BUDGET_EXCEEDED)
    if serial["duration_sec"] and parallel["duration_sec"] is not None and not stopped:
        speedup = round(100 * (1 - parallel["duration_sec"] / serial["duration_sec"]), 1)
    return {
        "mode": execution.mode,
        "serial": {"tasks": f"PM→{tasks} sequential agents", **serial, **usage},
        "parallel": {"tasks": f"PM→[{tasks} parallel agents]", **parallel, **usage},
        "speedup_pct": speedup,
        "serial_estimate_sec": execution.serial_estimate_sec,
        "parallel_estimate_sec": execution.estimated_duration_sec if execution.mode == "parallel" else None,
        "agent_work_sec": round(work, 3),
    }
