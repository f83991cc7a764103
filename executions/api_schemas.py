"""The REST API's request and response shapes (django-ninja schemas): the contract of DESIGN.md
"REST API", published at /api/docs."""

from typing import Literal

from django.conf import settings
from ninja import Field, Schema
from pydantic import ConfigDict, StrictBool, StrictFloat

# A field a request does not take is refused, not ignored: a misspelt `budget_usd` would otherwise
# start an execution with no budget at all.
REFUSE_UNKNOWN_FIELDS = ConfigDict(extra="forbid")


class ExecuteIn(Schema):
    model_config = REFUSE_UNKNOWN_FIELDS

    message: str = Field(
        ...,
        description="What to build",
        min_length=1,
        max_length=settings.OPENCLAW_MAX_MESSAGE_CHARS,
        pattern=r"\S",
    )
    sessionKey: str = Field("api", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")
    project: str = Field(
        "",
        max_length=100,
        description="The project to build on (letters, digits and . _ -); none: a project of its own",
    )
    force_parallel: StrictBool = False
    mode: Literal["auto", "parallel", "serial"] = "auto"
    budget_usd: StrictFloat | None = Field(
        None, ge=0, le=100000, description="Stop starting tasks past this spend"
    )
    approval: Literal["auto", "plan"] | None = Field(
        None,
        description="plan: wait in awaiting_approval after planning until approved (default: the client's)",
    )
    callback_url: str | None = Field(
        None,
        max_length=500,
        description="Webhooks for this execution go here (https; default: the client's callback URL)",
    )


class ApproveIn(Schema):
    model_config = REFUSE_UNKNOWN_FIELDS

    tasks: list[dict] | None = Field(
        None,
        description="An edited plan (the plan's tasks with tasks removed, descriptions or dependencies "
        "changed), validated like a plan; leave out to approve the plan as quoted",
    )


class PlanTaskOut(Schema):
    id: str
    pool: str
    description: str
    priority: int
    timeout_sec: int
    blocked_by: list[str]
    soft_deps: list[str]
    expected_sec: float | None


class PlanOut(Schema):
    tasks: list[PlanTaskOut]


class TaskBrief(Schema):
    id: str
    pool: str
    description: str
    status: str
    progress: int
    blocked_by: list[str]


class ExecuteOut(Schema):
    execution_id: str
    status: str
    approval: str
    parallel_tasks: int
    estimated_duration_sec: float | None
    estimated_cost_usd: str | None
    fee_usd: str
    quoted_fee_usd: str | None = Field(None, description="The fee charged once the plan is approved")
    tasks: list[TaskBrief] = Field(
        ..., description="The tasks; awaiting approval, the quoted plan's (status awaiting_approval)"
    )


class TaskOut(Schema):
    id: str
    pool: str
    kind: str
    description: str
    status: str
    attempts: int
    blocked_by: list[str]
    soft_deps: list[str]
    started_at: str | None
    finished_at: str | None
    progress: int
    tokens_in: int
    tokens_out: int
    cost_usd: str
    error: str
    verification: dict | None
    tests: dict | None = Field(
        None, description="The agent's last test run in its loop: {passed, failed}; null if it ran none"
    )
    commit: str | None = Field(
        None, description="The commit of the task's output in the project's repository"
    )


class TurnOut(Schema):
    number: int
    text: str
    tool_calls: list[dict]
    tool_results: list[dict]
    tokens_in: int
    tokens_out: int
    cost_usd: str
    duration_sec: float


class AttemptOut(Schema):
    task: str
    number: int
    status: str
    model: str
    provider: str
    started_at: str | None
    finished_at: str | None
    error: str
    tokens_in: int
    tokens_out: int
    cost_usd: str
    commands: list[dict]
    tests: dict | None
    turns: list[TurnOut]


class EvidenceOut(Schema):
    """One mismatch with the contract, as the checks found it."""

    check: str
    file: str | None
    line: int | None
    found: str
    expected: str


class ConflictOut(Schema):
    kind: str
    status: str
    between: list[str]
    description: str
    resolution: str
    rounds: int
    evidence: list[EvidenceOut] = []  # interface and ownership conflicts: the checks' findings
    gate: dict | None = None  # integration conflicts: the failing run (command, exit code, output tail)


class EndpointOut(Schema):
    method: str
    path: str
    request: dict
    response: dict


class TableOut(Schema):
    name: str
    columns: dict[str, str]


class ContractOut(Schema):
    endpoints: list[EndpointOut] = []
    tables: list[TableOut] = []
    ownership: dict[str, list[str]] = {}


class ContractChecksOut(Schema):
    checks: int = 0
    passed: int = 0
    failed: int = 0
    counts: dict[str, int] = {}
    notes: list[str] = []


class IntegrationOut(Schema):
    """The integration gate's last run on the merged project."""

    ran: bool = False
    command: str = ""
    exit_code: int | None = None
    passed: int = 0
    failed: int = 0
    output_tail: str = ""
    ok: bool | None = None
    reason: str = ""
    duration_sec: float | None = None


class ComparisonSide(Schema):
    tasks: str
    duration_sec: float | None
    estimated: bool
    tokens: int
    cost_usd: str


class ComparisonOut(Schema):
    mode: str
    serial: ComparisonSide
    parallel: ComparisonSide
    speedup_pct: float | None
    serial_estimate_sec: float | None
    parallel_estimate_sec: float | None
    agent_work_sec: float


class ExecutionOut(Schema):
    execution_id: str
    status: str
    approval: str
    approval_expires_at: str | None
    quoted_fee_usd: str | None = Field(..., description="The fee charged once the plan is approved")
    callback_url: str
    follows: str | None
    plan: PlanOut | None
    mode: str
    requested_mode: str
    routing_reason: str
    project: str
    base_commit: str | None = Field(None, description="The head of the project's main when it was planned")
    result_commit: str | None = Field(None, description="The execution's merge commit on main")
    message: str
    created_at: str
    duration_sec: float | None
    estimated_duration_sec: float | None
    serial_estimate_sec: float | None
    tasks_completed: int
    tasks_failed: int
    cost: str
    cost_usd: str
    fee_usd: str
    refund_usd: str
    budget_usd: str | None
    estimated_cost_usd: str | None
    tokens_in: int
    tokens_out: int
    final_response: str
    quality_score: float | None
    plan_source: str
    plan_notes: list[str]
    provider: str
    contract: ContractOut
    contract_checks: ContractChecksOut
    integration: IntegrationOut
    tasks: list[TaskOut]
    conflicts: list[ConflictOut]
    comparison: ComparisonOut


class ExecutionListItem(Schema):
    execution_id: str
    status: str
    mode: str
    project: str
    message: str
    created_at: str
    duration_sec: float | None
    cost_usd: str
    tasks_total: int
    tasks_completed: int


class EventOut(Schema):
    execution_id: str
    seq: int
    type: str
    task: str | None
    payload: dict
    at: str


class EventsOut(Schema):
    execution_id: str
    status: str
    events: list[EventOut]
    last_seq: int


class PoolOut(Schema):
    name: str
    enabled: bool
    max_concurrent: int
    timeout_sec: int
    max_retries: int
    model: str | None
    provider: str
    provider_note: str
    queued: int
    running: int
    ready: int


class InvoiceLine(Schema):
    kind: Literal["usage", "fee", "refund"]
    key: str
    description: str
    pool: str
    model: str
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    amount_usd: str = Field(..., description="Refunds are negative; usage to the micro-dollar")
    billed: bool = Field(
        ..., description="Usage is the model cost covered by the fee; fee and refunds are billed"
    )
    created_at: str


class InvoiceTotals(Schema):
    usage_usd: str
    fee_usd: str
    refund_usd: str
    net_usd: str
    tokens_in: int
    tokens_out: int
    estimated_cost_usd: str | None
    budget_usd: str | None


class InvoiceRefund(Schema):
    usd: str
    share_of_fee: str
    undelivered_share: str
    policy: str
    rule: str


class InvoiceOut(Schema):
    execution_id: str
    client: str
    status: str
    currency: str
    lines: list[InvoiceLine]
    totals: InvoiceTotals
    refund: InvoiceRefund
    net_usd: str
    comparison: ComparisonOut


class ProjectOut(Schema):
    name: str
    head: str | None
    executions: int
    updated_at: str
    clone_url: str


class CommitOut(Schema):
    commit: str
    message: str
    author: str
    execution_id: str | None
    task: str | None
    time: str


class ProjectFileOut(Schema):
    path: str
    size: int


class ProjectContractOut(Schema):
    """The endpoints and tables of the executions that landed on the project's main."""

    endpoints: list[EndpointOut] = []
    tables: list[TableOut] = []


class ProjectDetailOut(ProjectOut):
    history: list[CommitOut]
    files: list[ProjectFileOut]
    contract: ProjectContractOut


class ActionOut(Schema):
    execution_id: str
    status: str
    detail: str


class ErrorOut(Schema):
    detail: str
