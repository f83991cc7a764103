"""Billing: usage per attempt, the project fee, refunds by policy, budgets; every entry exactly once.

Ledger keys make entries idempotent: `usage:<attempt id>:<turn>` for each model call of an agent's
tool loop (a single reply is turn 1), `usage:<phase>:<execution id>:<n>` for
the PM's own calls (`phase_call_index`), `fee:<execution id>`, `refund:<execution id>:<settlement>`.
Usage amounts are kept to the micro-dollar, fees and refunds to the cent, so sums are exact on
every database.

The fee comes from the active PricingPolicy, refunds from the active RefundPolicy (both edited in
the admin). Without a policy row the built-in defaults apply: the seed's $0.80 per planned task
and 90% of the undelivered share of the work by estimated duration (backend 90 s and security
120 s lost of 315 s → 0.9 × 210/315 = 60% of the fee).
"""

import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection, transaction

from pools import llm
from pools.llm_types import Completion, ModelSpec
from pools.models import EngineSettings, WorkerPool

from . import sql
from .models import Attempt, AttemptTurn, Execution, LedgerEntry, PricingPolicy, RefundPolicy, Task
from .states import MAX_LOST_ATTEMPTS, AttemptStatus, StopReason, TaskStatus
from .transitions import lock_execution

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")

# Estimates: recent attempts of a pool, once there are enough of them; else these guesses.
HISTORY_SAMPLES = 100
MIN_HISTORY = 5
DEFAULT_INPUT_TOKENS = 2000
DEFAULT_OUTPUT_TOKENS = 1500
SYNTHESIS_TOKENS = (2000, 600)


def money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def micro(value: Decimal) -> Decimal:
    return Decimal(value).quantize(MICRO, rounding=ROUND_HALF_UP)


def _create_once(**fields) -> bool:
    """Insert a ledger entry unless its key exists; True when this call inserted it. One statement:
    no read of the key first and no savepoint (the fee and the PM's calls are charged in the
    transaction that holds the write lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.insert_new_statement(LedgerEntry, _LEDGER_COLUMNS, ("key",)),
            sql.insert_params([LedgerEntry(**fields)], _LEDGER_COLUMNS),
        )
        return cursor.rowcount == 1


@dataclass(frozen=True)
class AttemptUsage:
    """One model call of an attempt (a turn of its loop): tokens, cost and transcript, worked out
    before the transaction that records them."""

    spec: ModelSpec
    completion: Completion
    cost: Decimal
    turn: int = 1
    transcript: dict | None = None  # text, tool_calls, tool_results, duration_sec

    @classmethod
    def of(cls, spec: ModelSpec, completion: Completion, turn: int = 1, transcript: dict | None = None):
        return cls(spec, completion, micro(spec.cost(completion)), turn, transcript)

    def ledger_key(self, attempt_id) -> str:
        return f"usage:{attempt_id}:{self.turn}"

    def attempt_assign(self) -> dict:
        """Set on the attempt by the update that records this call: the model that answered."""
        return {"model": self.spec.label, "provider": self.spec.provider}

    def task_increments(self) -> dict:
        """Added to the attempt's and its task's totals by the update that records this call
        (`transitions.move_task(add=…)`)."""
        return {
            "tokens_in": self.completion.input_tokens,
            "tokens_out": self.completion.output_tokens,
            "cost_usd": self.cost,
        }

    def attempt_increments(self) -> dict:
        return {
            **self.task_increments(),
            "cache_read_tokens": self.completion.cache_read_tokens,
            "cache_write_tokens": self.completion.cache_write_tokens,
        }


def charge_closed_attempt(attempt: Attempt, usage: AttemptUsage, client_id: int) -> None:
    """The ledger entry, turn and execution totals of the last call of an attempt whose closing
    compare-and-set just added `attempt_increments()` (and the task's): having won it, this is the
    call's only charge, so no key check. The attempt and its task in memory are brought up to date."""
    task = attempt.task
    _charge_usage(attempt, usage, client_id)
    for field, value in usage.attempt_assign().items():
        setattr(attempt, field, value)
    for field, value in usage.attempt_increments().items():
        setattr(attempt, field, getattr(attempt, field) + value)
    task.tokens_in += usage.completion.input_tokens
    task.tokens_out += usage.completion.output_tokens
    task.cost_usd += usage.cost


def record_usage(attempt: Attempt, usage: AttemptUsage, client_id: int | None = None) -> bool:
    """Charge one call of an attempt outside the transaction that closes it: a turn of a loop that
    goes on, or the last call of an attempt closed by someone else (a late report after the reaper
    expired it, a repeated report). Tokens spent are billed whatever happened, and only once per key.

    The caller holds the execution's lock, so the key check cannot race and the insert needs no
    savepoint.
    """
    task = attempt.task
    if LedgerEntry.objects.filter(key=usage.ledger_key(attempt.pk)).exists():
        return False
    if client_id is None:
        client_id = Execution.objects.values_list("client_id", flat=True).get(pk=task.execution_id)
    _charge_usage(attempt, usage, client_id)
    sql.update(Attempt, {"pk": attempt.pk}, assign=usage.attempt_assign(), add=usage.attempt_increments())
    sql.update(Task, {"pk": task.pk}, add=usage.task_increments())
    return True


@dataclass(frozen=True)
class TurnVerdict:
    """What the transaction that billed a turn found: whether it billed it (False: its key was in the
    ledger already), whether the attempt is still running, and whether the execution's budget allows
    another call costing as much as this one."""

    billed: bool
    running: bool
    next_allowed: bool


def record_turn(attempt: Attempt, usage: AttemptUsage, client_id: int) -> TurnVerdict:
    """A turn of an attempt's loop that goes on, billed and kept as soon as its call returns, so a
    worker killed later loses nothing that was spent.

    The same transaction answers the two questions asked before the next call, so a turn costs the
    loop one transaction and no other query: is the attempt still running (not cancelled or expired
    meanwhile), and does the budget allow another call (spent, this turn included, plus as much as
    this turn cost)? A call that was made is billed whatever the answers: the loop makes no further
    call when either is no. The ledger key is inserted first, only if new, and the totals move only
    when it was: a repeated flush (a retry after a lost commit acknowledgement) charges nothing.
    """
    task = attempt.task
    entry, turn = _usage_entry(attempt, usage, client_id), _turn_row(attempt, usage)
    execution = {"pk": task.execution_id}
    with transaction.atomic():
        lock_execution(task.execution_id)
        if connection.vendor == "postgresql":
            statements = {
                "spent": sql.update_statement(
                    Execution,
                    execution,
                    returning=("cost_usd", "budget_usd"),
                    add=_execution_increments(usage),
                    guard=sql.INSERTED,
                ),
                "run": sql.update_statement(
                    Attempt,
                    {"pk": attempt.pk},
                    returning=("status",),
                    assign=usage.attempt_assign(),
                    add=usage.attempt_increments(),
                    guard=sql.INSERTED,
                ),
                "task": sql.update_statement(
                    Task, {"pk": task.pk}, add=usage.task_increments(), guard=sql.INSERTED
                ),
            }
            if turn is not None:
                statements["turn"] = (
                    sql.insert_new_statement(AttemptTurn, _TURN_COLUMNS, ("attempt", "number")),
                    sql.insert_params([turn], _TURN_COLUMNS),
                )
            rows = sql.insert_new_then(
                LedgerEntry, _LEDGER_COLUMNS, ("key",), entry, statements, read=("run", "spent")
            )
            billed = bool(rows)
            row = rows[0] if rows else None
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.insert_new_statement(LedgerEntry, _LEDGER_COLUMNS, ("key",)),
                    sql.insert_params([entry], _LEDGER_COLUMNS),
                )
                billed = cursor.rowcount == 1
            if billed:
                status = sql.update_returning(
                    Attempt,
                    {"pk": attempt.pk},
                    ("status",),
                    assign=usage.attempt_assign(),
                    add=usage.attempt_increments(),
                )
                totals = sql.update_returning(
                    Execution, execution, ("cost_usd", "budget_usd"), add=_execution_increments(usage)
                )
                sql.update(Task, {"pk": task.pk}, add=usage.task_increments())
                _keep_turn(turn)
                row = status[0] + totals[0] if status and totals else None
        if not billed:
            row = (
                Attempt.objects.filter(pk=attempt.pk)
                .values_list("status", "task__execution__cost_usd", "task__execution__budget_usd")
                .first()
            )
    if row is None:
        return TurnVerdict(billed, running=False, next_allowed=False)
    status, cost, budget = row
    cost = sql.decimal_value(Execution, "cost_usd", cost)
    budget = sql.decimal_value(Execution, "budget_usd", budget)
    return TurnVerdict(
        billed,
        running=status == AttemptStatus.RUNNING,
        next_allowed=budget is None or cost + usage.cost <= budget,
    )


_LEDGER_COLUMNS = (
    "execution",
    "client",
    "kind",
    "key",
    "amount_usd",
    "attempt",
    "pool",
    "model",
    "tokens_in",
    "tokens_out",
    "cache_read_tokens",
    "cache_write_tokens",
    "description",
    "created_at",
)


def _usage_entry(attempt: Attempt, usage: AttemptUsage, client_id: int) -> LedgerEntry:
    task, completion = attempt.task, usage.completion
    return LedgerEntry(
        execution_id=task.execution_id,
        client_id=client_id,
        kind="usage",
        key=usage.ledger_key(attempt.pk),
        amount_usd=usage.cost,
        attempt_id=attempt.pk,
        pool=task.pool,
        model=usage.spec.label,
        tokens_in=completion.input_tokens,
        tokens_out=completion.output_tokens,
        cache_read_tokens=completion.cache_read_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        description=f"{task.key} attempt {attempt.number}"
        + (f" turn {usage.turn}" if usage.turn > 1 or usage.transcript else ""),
    )


def _execution_increments(usage: AttemptUsage) -> dict:
    return {
        "cost_usd": usage.cost,
        "tokens_in": usage.completion.input_tokens,
        "tokens_out": usage.completion.output_tokens,
    }


def _charge_usage(attempt: Attempt, usage: AttemptUsage, client_id: int) -> None:
    """The attempt's usage entry inserted and its execution's totals raised. Every attempt's
    success comes here inside the write lock, so it is SQL built once, and on PostgreSQL one
    statement (the totals' UPDATE in a data-modifying CTE): one round trip fewer per success."""
    entry = _usage_entry(attempt, usage, client_id)
    totals, totals_params = sql.update_statement(
        Execution, {"pk": attempt.task.execution_id}, add=_execution_increments(usage)
    )
    insert = sql.insert_statement(LedgerEntry, _LEDGER_COLUMNS)
    insert_params = sql.insert_params([entry], _LEDGER_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(sql.update_then_insert(totals, insert), totals_params + insert_params)
        else:
            cursor.execute(totals, totals_params)
            cursor.execute(insert, insert_params)
    _keep_turn(_turn_row(attempt, usage))


_TURN_COLUMNS = (
    "attempt",
    "number",
    "text",
    "tool_calls",
    "tool_results",
    "duration_sec",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "created_at",
)


def _turn_row(attempt: Attempt, usage: AttemptUsage) -> AttemptTurn | None:
    """The call's turn of the transcript, unsaved; None for a call without one (a single reply)."""
    if usage.transcript is None:
        return None
    return AttemptTurn(
        attempt_id=attempt.pk,
        number=usage.turn,
        text=usage.transcript.get("text", ""),
        tool_calls=usage.transcript.get("tool_calls", []),
        tool_results=usage.transcript.get("tool_results", []),
        duration_sec=usage.transcript.get("duration_sec", 0.0),
        tokens_in=usage.completion.input_tokens,
        tokens_out=usage.completion.output_tokens,
        cost_usd=usage.cost,
    )


def _keep_turn(turn: AttemptTurn | None) -> None:
    """The turn stored with its call's ledger entry, when the call has one."""
    if turn is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            sql.insert_statement(AttemptTurn, _TURN_COLUMNS), sql.insert_params([turn], _TURN_COLUMNS)
        )


def record_phase_usage(
    execution: Execution, phase: str, index: int | str, spec: ModelSpec, completion: Completion
) -> bool:
    """Charge the PM's own calls (planning, synthesis), once per key, whoever won the phase."""
    cost = micro(spec.cost(completion))
    inserted = _create_once(
        execution=execution,
        client_id=execution.client_id,
        kind="usage",
        key=f"usage:{phase}:{execution.pk}:{index}",
        amount_usd=cost,
        pool="pm",
        model=spec.label,
        tokens_in=completion.input_tokens,
        tokens_out=completion.output_tokens,
        cache_read_tokens=completion.cache_read_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        description=f"PM {phase}",
    )
    if not inserted:
        return False
    _add_to_execution(execution.pk, cost, completion)
    return True


def phase_call_index(claim: int, run: int, call: int) -> str | int:
    """The <n> of a PM call's ledger key: the call's number, prefixed by the phase's claim (a worker
    that took the phase after another one's lease lapsed) and the client's retry when not the first."""
    if claim <= 1 and run == 0:
        return call
    return f"{run}.{claim}.{call}"


def _add_to_execution(execution_id: str, cost: Decimal, completion: Completion) -> None:
    sql.update(
        Execution,
        {"pk": execution_id},
        add={"cost_usd": cost, "tokens_in": completion.input_tokens, "tokens_out": completion.output_tokens},
    )


# ---------------------------------------------------------------- estimates


@dataclass(frozen=True)
class AttemptEstimate:
    """What one attempt of a pool is expected to use, and how many attempts a task takes."""

    tokens_in: int
    tokens_out: int
    cost: Decimal
    attempts_per_task: Decimal
    from_history: bool


ESTIMATE_CAP = 4  # history moves an estimate at most this factor from the pool's expectation


def capped(observed: int, expected: int) -> int:
    return max(expected // ESTIMATE_CAP, min(expected * ESTIMATE_CAP, observed))


def attempt_estimates(pool_names: set[str]) -> dict[str, AttemptEstimate]:
    """Per pool: the median tokens of its recent attempts (or defaults) at its model's current prices."""
    pools = {p.name: p for p in WorkerPool.objects.select_related("model").filter(name__in=pool_names)}
    estimates = {}
    for name in pool_names:
        recent = list(
            Attempt.objects.filter(task__pool=name, finished_at__isnull=False, tokens_out__gt=0)
            .order_by("-finished_at")
            .values_list("task_id", "tokens_in", "tokens_out")[:HISTORY_SAMPLES]
        )
        from_history = len(recent) >= MIN_HISTORY
        expected_in = DEFAULT_INPUT_TOKENS
        expected_out = pools[name].expected_output_tokens if name in pools else DEFAULT_OUTPUT_TOKENS
        if from_history:
            # Medians of every client's recent attempts, held within ESTIMATE_CAP of the pool's
            # configured expectation: another client's traffic cannot move a fee or a budget far.
            tokens_in = capped(int(statistics.median(r[1] for r in recent)), expected_in)
            tokens_out = capped(int(statistics.median(r[2] for r in recent)), expected_out)
            # No task takes more than its retries and the tolerated losses of workers.
            most = (pools[name].max_retries if name in pools else 2) + 1 + MAX_LOST_ATTEMPTS
            per_task = min(Decimal(len(recent)) / Decimal(len({r[0] for r in recent})), Decimal(most))
        else:
            tokens_in, tokens_out = expected_in, expected_out
            per_task = Decimal("1")
        pool = pools.get(name)
        spec = llm.resolve(pool.model if pool else None)
        cost = micro(spec.cost(Completion(text="", input_tokens=tokens_in, output_tokens=tokens_out)))
        estimates[name] = AttemptEstimate(
            tokens_in, tokens_out, cost, per_task.quantize(Decimal("0.01")), from_history
        )
    return estimates


def plan_cost_estimate(
    plan_tasks: list[dict], *, planning: list[tuple[ModelSpec, Completion]] = ()
) -> Decimal:
    """Expected model cost of a plan before work starts: the planning calls already made, every task
    at its pool's expected cost per attempt × attempts per task, and the synthesis."""
    estimates = attempt_estimates({t["pool"] for t in plan_tasks})
    tasks = sum(
        (estimates[t["pool"]].cost * estimates[t["pool"]].attempts_per_task for t in plan_tasks), Decimal("0")
    )
    spent = sum((spec.cost(completion) for spec, completion in planning), Decimal("0"))
    engine = EngineSettings.current()
    synthesis = llm.resolve(engine.synthesis_model or engine.pm_model).cost(
        Completion(text="", input_tokens=SYNTHESIS_TOKENS[0], output_tokens=SYNTHESIS_TOKENS[1])
    )
    return micro(spent + tasks + synthesis)


# ---------------------------------------------------------------- fee and refunds


def plan_fee(*, task_count: int, estimated_cost: Decimal) -> tuple[Decimal, str]:
    """The project fee by the active pricing policy, fixed when the plan is priced, and the
    ledger's words for it (the policy it was priced by)."""
    policy = PricingPolicy.current()
    return money(policy.fee(task_count=task_count, estimated_cost=estimated_cost)), fee_description(policy)


def fee_for_plan(*, task_count: int, estimated_cost: Decimal) -> Decimal:
    return plan_fee(task_count=task_count, estimated_cost=estimated_cost)[0]


def fee_description(policy: PricingPolicy) -> str:
    return f"project fee ({policy.name}: {policy.get_method_display()})"


def charge_fee(execution: Execution, fee: Decimal, description: str = "") -> None:
    """The fee on the ledger, once. `description`: as `plan_fee` gave it with the fee (the active
    policy's otherwise), so the transaction that charges it reads no policy."""
    if _create_once(
        execution=execution,
        client_id=execution.client_id,
        kind="fee",
        key=f"fee:{execution.pk}",
        amount_usd=fee,
        description=description or fee_description(PricingPolicy.current()),
    ):
        sql.update(Execution, {"pk": execution.pk}, assign={"fee_usd": fee})


def undelivered_share(tasks: list[Task]) -> Decimal:
    """The planned work not delivered, by estimated duration (0..1)."""
    return RefundPolicy(share_rule="weight").undelivered_share(tasks)


def withheld(execution: Execution) -> frozenset[str]:
    """Planned tasks that succeeded but are not delivered: the deviating sides of unresolved conflicts."""
    return frozenset(key for conflict in execution.conflicts.all() for key in conflict.withheld_tasks())


# What the refund rules read of a task (`RefundPolicy.refund_share`): a settlement, which holds the
# write lock, leaves out the results, which hold every file an agent wrote.
REFUND_FIELDS = ("execution", "key", "kind", "status", "weight", "started_at")
_refund_tasks = sql.CompiledRead(
    lambda execution_id: Task.objects.filter(execution_id=execution_id).only(*REFUND_FIELDS),
    Task._meta.get_field("execution"),
)
_refund_entries = sql.CompiledRead(
    lambda execution_id: LedgerEntry.objects.filter(execution_id=execution_id, kind="refund").values_list(
        "amount_usd", flat=True
    ),
    LedgerEntry._meta.get_field("execution"),
)


def refund_for(
    execution: Execution, status: str, tasks: list[Task], policy: RefundPolicy | None = None
) -> Decimal:
    """What the client gets back when the execution ends in `status`, by the active refund policy."""
    policy = policy or RefundPolicy.current()
    return money(execution.fee_usd * policy.refund_share(status, tasks, withheld(execution)))


def settle(execution: Execution, status: str) -> Decimal:
    """Record the refund for a finished execution (once per settlement) and return it."""
    tasks = _refund_tasks.all(execution.pk)
    refunded = _refund_entries.all(execution.pk)  # read under the execution's lock: no entry comes between
    policy = RefundPolicy.current()
    owed = refund_for(execution, status, tasks, policy)
    already = execution.refund_usd
    delta = owed - already
    if delta and _create_once(
        execution=execution,
        client_id=execution.client_id,
        kind="refund",
        key=f"refund:{execution.pk}:{len(refunded)}",
        amount_usd=delta,
        description=f"refund ({status}, policy {policy.name})",
    ):
        total = money(sum(refunded, Decimal("0")) + delta)
        Execution.objects.filter(pk=execution.pk).update(refund_usd=total)
        return total
    return already


# ---------------------------------------------------------------- budgets


def budget_allows_dispatch(execution_id: str, pool: str) -> bool:
    """Whether a task of `pool` may start: spent + reserved (the expected cost of the execution's
    queued and running attempts) + this task's expected cost stays within the budget."""
    row = Execution.objects.filter(pk=execution_id).values("budget_usd", "cost_usd").first()
    if not row or row["budget_usd"] is None:
        return True
    # Once stopped, stopped: work that became ready since (its dependency finished) does not start either.
    if Task.objects.filter(
        execution_id=execution_id, status=TaskStatus.CANCELLED, stop_reason=StopReason.BUDGET
    ).exists():
        return False
    active = list(
        Task.objects.filter(
            execution_id=execution_id, status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]
        ).values_list("pool", flat=True)
    )
    estimates = attempt_estimates(set(active) | {pool})
    reserved = sum((estimates[p].cost for p in active), Decimal("0"))
    return row["cost_usd"] + reserved + estimates[pool].cost <= row["budget_usd"]
