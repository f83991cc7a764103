"""Executions and everything that happens inside one: tasks, attempts, events, conflicts, ledger."""

import hashlib
import secrets
import uuid
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from .states import (
    EXECUTION_TERMINAL,
    TASK_TERMINAL,
    ApprovalMode,
    AttemptStatus,
    ConflictKind,
    ConflictStatus,
    DeliveryStatus,
    ExecutionStatus,
    StopReason,
    TaskKind,
    TaskStatus,
)


class Client(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    default_budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    default_approval = models.CharField(
        max_length=8,
        choices=ApprovalMode.choices,
        default=ApprovalMode.AUTO,
        help_text="For requests that do not say: start at once, or wait for the client to approve the plan",
    )
    default_callback_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Webhooks go here for requests without a callback_url of their own",
    )
    # The key webhooks are signed with (HMAC-SHA256); `manage.py webhook_secret NAME` shows it.
    webhook_secret = models.CharField(max_length=80, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def ensure_webhook_secret(self) -> str:
        """The client's webhook secret, made on first use (once, whoever asks first)."""
        if not self.webhook_secret:
            Client.objects.filter(pk=self.pk, webhook_secret="").update(
                webhook_secret="whsec_" + secrets.token_urlsafe(32)
            )
            self.webhook_secret = Client.objects.values_list("webhook_secret", flat=True).get(pk=self.pk)
        return self.webhook_secret


class ApiKey(models.Model):
    """An API key of a client. Only a SHA-256 of the key is stored; the prefix identifies it to humans."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.client})"

    @staticmethod
    def hash_key(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, client: Client) -> tuple["ApiKey", str]:
        raw = "oc_" + secrets.token_urlsafe(32)
        return cls.objects.create(client=client, prefix=raw[:10], key_hash=cls.hash_key(raw)), raw


class Project(models.Model):
    """A client's project: a git repository, the authoritative store of its files
    (`executions.projects`). Each execution of the project starts from its `main` and lands on it."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="projects")
    name = models.CharField(max_length=100)
    head = models.CharField(
        max_length=40, blank=True, help_text="The commit `main` points at: moved only by compare-and-set"
    )
    objects_seq = models.PositiveBigIntegerField(
        default=0, help_text="The last sequence number given to one of its git objects"
    )
    # The endpoints and tables of the executions that landed: moves with `head`, in one
    # compare-and-set (`projects.land`). A follow-up's plan amends it.
    contract = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="project_name_unique_per_client")
        ]

    def __str__(self) -> str:
        return f"{self.client}/{self.name}"


class GitObject(models.Model):
    """A git object of a project (commit, tree or blob; zlib-compressed), so that hosts sharing no
    disk read and write the same repositories: each host's repository folder is a cache that
    copies the objects it lacks in `seq` order (`executions.projects.sync`). Objects are written in
    transactions that hold the project's row, so `seq` commits in order and a copy never skips one."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="git_objects")
    seq = models.PositiveBigIntegerField()
    oid = models.CharField(max_length=40)
    kind = models.PositiveSmallIntegerField(help_text="git's object type: 1 commit, 2 tree, 3 blob")
    data = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "oid"], name="git_object_unique_per_project")
        ]
        indexes = [models.Index(fields=["project", "seq"], name="git_object_copy_order")]


class Execution(models.Model):
    MODES = [("auto", "auto"), ("parallel", "parallel"), ("serial", "serial")]

    id = models.CharField(max_length=80, primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="executions")
    session_key = models.CharField(max_length=64)
    project = models.CharField(max_length=100, blank=True)
    base_commit = models.CharField(
        max_length=40, blank=True, help_text="The head of the project's main when it was planned"
    )
    result_commit = models.CharField(
        max_length=40, blank=True, help_text="The execution's merge commit, where main moved"
    )
    message = models.TextField()
    requested_mode = models.CharField(max_length=10, choices=MODES, default="auto")
    force_parallel = models.BooleanField(default=False)
    approval = models.CharField(max_length=8, choices=ApprovalMode.choices, default=ApprovalMode.AUTO)
    approval_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Awaiting approval: cancelled with no fee past this time"
    )
    quoted_fee_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="The fee of the plan awaiting approval (charged when it is approved)",
    )
    callback_url = models.URLField(max_length=500, blank=True, help_text="Where its webhooks go")
    follows = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="follow_ups",
        help_text="The execution this one is a follow-up request to (same project)",
    )
    mode = models.CharField(max_length=10, blank=True, help_text="serial or parallel, decided by the router")
    routing_reason = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=20, choices=ExecutionStatus.choices, default=ExecutionStatus.PLANNING
    )
    plan = models.JSONField(default=dict, blank=True)
    plan_source = models.CharField(max_length=20, blank=True, help_text="model, repaired or fallback")
    plan_notes = models.JSONField(default=list, blank=True)
    # The effective contract (endpoints, tables, ownership): the project's stored contract with the
    # plan's amendment over it; what every task builds to and the checks use.
    contract = models.JSONField(default=dict, blank=True)
    # The plan's own endpoints and tables (what it adds or redefines), applied to the project's
    # contract when the execution lands.
    contract_amendment = models.JSONField(default=dict, blank=True)
    # The last check of the merged tree against the contract: counts and mismatches.
    contract_report = models.JSONField(default=dict, blank=True)
    # The integration gate's last run: {"ran", "command", "exit_code", "passed", "failed", "output_tail", …}.
    integration = models.JSONField(default=dict, blank=True)
    budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    estimated_duration_sec = models.FloatField(null=True, blank=True)
    serial_estimate_sec = models.FloatField(null=True, blank=True)
    estimated_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    fee_usd = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    refund_usd = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    final_response = models.TextField(blank=True)
    quality_score = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    retries = models.PositiveSmallIntegerField(default=0, help_text="Client retries so far")
    next_seq = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the current phase's control message was sent, so the reaper can resend a lost one.
    phase_sent_at = models.DateTimeField(null=True, blank=True)
    # The lease of the worker running the current phase (planning, aggregation): the reaper resends
    # the phase only once it lapsed, so one phase's model call never runs twice at once.
    phase_lease_until = models.DateTimeField(null=True, blank=True)
    phase_claims = models.PositiveIntegerField(default=0, help_text="Workers that took a phase so far")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["client", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.id

    @property
    def is_terminal(self) -> bool:
        return self.status in EXECUTION_TERMINAL

    @property
    def duration_sec(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return round((end - self.started_at).total_seconds(), 3)

    @staticmethod
    def new_id(session_key: str) -> str:
        slug = "".join(ch for ch in session_key if ch.isalnum() or ch in "-_")[:32] or "anon"
        return f"exec_{slug}_{int(timezone.now().timestamp())}_{secrets.token_hex(3)}"


class Task(models.Model):
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="tasks")
    key = models.CharField(max_length=40, help_text="The plan's task id, e.g. task_1")
    pool = models.CharField(max_length=32, db_index=True)
    description = models.TextField()
    kind = models.CharField(max_length=16, choices=TaskKind.choices, default=TaskKind.PLAN)
    priority = models.IntegerField(default=1, help_text="Lower runs first")
    timeout_sec = models.PositiveIntegerField(default=300)
    blocked_by = models.JSONField(default=list, blank=True)
    soft_deps = models.JSONField(default=list, blank=True)
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    stop_reason = models.CharField(
        max_length=12,
        choices=StopReason.choices,
        default=StopReason.NONE,
        blank=True,
        help_text="Why it stopped short of succeeding, when the status alone does not say",
    )
    role = models.CharField(max_length=16, blank=True, help_text="Its pool's role when it was created")
    expected_sec = models.FloatField(default=1.0, help_text="Expected duration used for ranks and estimates")
    weight = models.FloatField(
        default=1.0,
        help_text="Share of the project's work, for refunds: fixed by the server when the plan is accepted",
    )
    rank = models.FloatField(
        default=0.0, help_text="Upward rank: expected duration plus the longest chain after it"
    )
    not_before = models.DateTimeField(null=True, blank=True, help_text="Retry backoff: not dispatched before")
    dispatch_count = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    failed_attempts = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=2)
    progress = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="When its last hard dependency finished")
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    # The result's file paths, kept beside it so that a success looks for colliding files without
    # reading every other result of the execution.
    paths = models.JSONField(default=list, blank=True, editable=False)
    commit = models.CharField(max_length=40, blank=True, help_text="The commit of its output")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "key"], name="task_key_unique_per_execution")
        ]
        indexes = [
            # Dispatch walks a pool's ready tasks in this order (sql.DISPATCH_ORDER) and
            # stops at its free slots: no sort of the whole backlog inside the pool's lock. Its
            # prefix serves the (pool, status) lookups and counts.
            models.Index(fields=["pool", "status", "priority", "-rank", "id"], name="task_dispatch_order"),
            models.Index(fields=["execution", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.execution_id}/{self.key}"

    def save(self, *args, **kwargs):
        # `paths` follows `result` (a transition that sets a result with update() sets both).
        self.paths = self.paths_of(self.result)
        if kwargs.get("update_fields") is not None and "result" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "paths"}
        super().save(*args, **kwargs)

    @staticmethod
    def paths_of(result: dict) -> list[str]:
        return sorted({f["path"] for f in result.get("files", []) if isinstance(f, dict) and "path" in f})

    @property
    def is_terminal(self) -> bool:
        return self.status in TASK_TERMINAL


class Attempt(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=AttemptStatus.choices, default=AttemptStatus.RUNNING)
    worker = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=128, blank=True)
    provider = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField()
    deadline_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))

    class Meta:
        ordering = ["started_at"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="attempt_number_unique_per_task")
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    @property
    def duration_sec(self) -> float | None:
        if not self.finished_at:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class AttemptTurn(models.Model):
    """One model call of an attempt's tool loop, as its transcript shows it; stored with the call's
    ledger entry (`usage:<attempt>:<number>`), so a turn exists exactly when it was billed."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="turns")
    number = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_results = models.JSONField(default=list, blank=True)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    duration_sec = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["attempt", "number"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "number"], name="turn_number_unique_per_attempt")
        ]


class Event(models.Model):
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=40)
    task_key = models.CharField(max_length=40, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "seq"], name="event_seq_unique_per_execution")
        ]

    def as_message(self) -> dict:
        return {
            "execution_id": self.execution_id,
            "seq": self.seq,
            "type": self.type,
            "task": self.task_key or None,
            "payload": self.payload,
            "at": self.created_at.isoformat(),
        }


class Conflict(models.Model):
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="conflicts")
    kind = models.CharField(max_length=32, choices=ConflictKind.choices)
    between = models.JSONField(default=list)
    description = models.TextField()
    status = models.CharField(max_length=12, choices=ConflictStatus.choices, default=ConflictStatus.DETECTED)
    resolution = models.TextField(blank=True)
    rounds = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def withheld_tasks(self) -> list[str]:
        """The tasks whose output this conflict, left unresolved, keeps from counting as delivered: the
        side that deviates (the flagged code, the rejected schema, the lineage a fix was for)."""
        if self.status == ConflictStatus.RESOLVED:
            return []
        keys = self.details.get("deviating") or [self.details.get("code") or self.details.get("schema")]
        return [key for key in keys if key]


class LedgerEntry(models.Model):
    KINDS = [("usage", "usage"), ("fee", "fee"), ("refund", "refund")]

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="ledger")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=10, choices=KINDS)
    # Exactly-once: usage:<attempt id>, fee:<execution id>, refund:<execution id>.
    key = models.CharField(max_length=120, unique=True)
    amount_usd = models.DecimalField(max_digits=14, decimal_places=6)
    attempt = models.ForeignKey(Attempt, null=True, blank=True, on_delete=models.SET_NULL)
    pool = models.CharField(max_length=32, blank=True)
    model = models.CharField(max_length=128, blank=True)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "ledger entries"


class SingleActive(models.Model):
    """A policy of which exactly one row is active; saving an active row deactivates the others."""

    name = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(
        default=False, help_text="The one policy in force; activating this one retires the other"
    )
    description = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-is_active", "name"]

    def __str__(self) -> str:
        return f"{self.name}{' (active)' if self.is_active else ''}"

    def save(self, *args, **kwargs):
        with transaction.atomic():
            if self.is_active:
                type(self).objects.filter(is_active=True).exclude(pk=self.pk).update(is_active=False)
            super().save(*args, **kwargs)

    def validate_constraints(self, exclude=None):
        # Saving an active policy retires the active one, so "only one active" holds without a form error.
        super().validate_constraints(exclude=set(exclude or ()) | {"is_active"})

    @classmethod
    def current(cls):
        """The active policy; without one, an unsaved policy with the built-in defaults."""
        return cls.objects.filter(is_active=True).first() or cls(name="built-in", is_active=True)


SHARE = {"max_digits": 5, "decimal_places": 4}


class RefundPolicy(SingleActive):
    """What a client gets back when an execution ends short of `completed`."""

    RULES = [
        ("weight", "by task weight (the server's estimate of each task's work)"),
        ("count", "by task count"),
    ]
    NONE, FULL, UNDELIVERED = "none", "full", "undelivered"
    TREATMENTS = [(NONE, "no refund"), (FULL, "full refund"), (UNDELIVERED, "refund the undelivered share")]

    share_rule = models.CharField(
        max_length=10,
        choices=RULES,
        default="weight",
        help_text="How the undelivered share of the planned work is measured",
    )
    factor = models.DecimalField(
        **SHARE,
        default=Decimal("0.9"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Share of the fee refunded per unit of undelivered work",
    )
    floor_share = models.DecimalField(
        **SHARE,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Least share of the fee refunded once anything is undelivered",
    )
    cap_share = models.DecimalField(
        **SHARE,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Most share of the fee refunded by the undelivered rule",
    )
    on_partial = models.CharField(max_length=12, choices=TREATMENTS, default=UNDELIVERED)
    on_budget_exceeded = models.CharField(max_length=12, choices=TREATMENTS, default=UNDELIVERED)
    on_failed = models.CharField(max_length=12, choices=TREATMENTS, default=FULL)
    # A client who cancels pays for what it got: the fee back before any work, the undelivered share after.
    on_cancelled_before_start = models.CharField(
        max_length=12, choices=TREATMENTS, default=FULL, help_text="Cancelled before any task started"
    )
    on_cancelled_after_start = models.CharField(max_length=12, choices=TREATMENTS, default=UNDELIVERED)

    class Meta(SingleActive.Meta):
        verbose_name_plural = "refund policies"
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_refund_policy"
            )
        ]

    def clean(self) -> None:
        if self.floor_share is not None and self.cap_share is not None and self.floor_share > self.cap_share:
            raise ValidationError({"floor_share": "The floor cannot exceed the cap."})

    def undelivered_share(self, tasks: list["Task"], withheld: frozenset[str] = frozenset()) -> Decimal:
        """The planned work not delivered, 0..1, by weight or by count (remediation work does not count).
        A task in `withheld` succeeded but is not delivered: it is the deviating side of a conflict left
        unresolved (`Conflict.withheld_tasks`)."""
        planned = [t for t in tasks if t.kind == TaskKind.PLAN]

        def lost(task: "Task") -> bool:
            return task.status != TaskStatus.SUCCEEDED or task.key in withheld

        if self.share_rule == "count":
            total = len(planned)
            return Decimal(sum(1 for t in planned if lost(t))) / Decimal(total) if total else Decimal("0")
        total = sum(Decimal(str(t.weight)) for t in planned)
        if total <= 0:
            return Decimal("0")
        return sum((Decimal(str(t.weight)) for t in planned if lost(t)), Decimal("0")) / total

    def treatment_for(self, status: str, tasks: list["Task"]) -> str:
        if status == ExecutionStatus.CANCELLED:
            started = any(t.started_at is not None for t in tasks)
            return self.on_cancelled_after_start if started else self.on_cancelled_before_start
        return {
            ExecutionStatus.PARTIAL: self.on_partial,
            ExecutionStatus.BUDGET_EXCEEDED: self.on_budget_exceeded,
            ExecutionStatus.FAILED: self.on_failed,
        }.get(status, self.NONE)

    def refund_share(
        self, status: str, tasks: list["Task"], withheld: frozenset[str] = frozenset()
    ) -> Decimal:
        """The share of the fee (0..1) refunded when an execution ends in `status`."""
        treatment = self.treatment_for(status, tasks)
        if treatment == self.FULL:
            return Decimal("1")
        if treatment != self.UNDELIVERED:
            return Decimal("0")
        undelivered = self.undelivered_share(tasks, withheld)
        if undelivered <= 0:
            return Decimal("0")
        return min(self.cap_share, max(self.floor_share, self.factor * undelivered))


class PricingPolicy(SingleActive):
    """How the project fee is set when the plan is accepted."""

    METHODS = [
        ("per_task", "fixed fee by size (per planned task)"),
        ("tokens", "estimated tokens × price × markup"),
    ]

    method = models.CharField(max_length=10, choices=METHODS, default="per_task")
    fee_per_task = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0.80"), validators=[MinValueValidator(Decimal("0"))]
    )
    markup = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        default=Decimal("1.5"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="tokens method: multiplies the estimated model cost",
    )
    minimum_fee = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )

    class Meta(SingleActive.Meta):
        verbose_name_plural = "pricing policies"
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_pricing_policy"
            )
        ]

    def fee(self, *, task_count: int, estimated_cost: Decimal) -> Decimal:
        """The fee before rounding to cents."""
        if self.method == "tokens":
            raw = estimated_cost * self.markup
        else:
            raw = self.fee_per_task * task_count
        return max(self.minimum_fee, raw)


class WebhookDelivery(models.Model):
    """One webhook to send: created in the transaction of the status change it announces, sent by
    a worker once committed, retried under the same delivery id until a 2xx, a 410, a refusal of its
    URL or the retry window's end (`webhooks`)."""

    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="webhooks")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="webhooks")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=500)
    body = models.TextField(help_text="The exact bytes sent (UTF-8): every retry sends the same body")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    retrying_since = models.DateTimeField(
        default=timezone.now,
        help_text="Retries end once an attempt this long after it fails (a resend restarts it)",
    )
    # The message that will send it next holds the delivery until then: a worker sends only for
    # the current claim number, so a duplicate message changes nothing.
    claims = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["execution", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.url} ({self.status})"


class WebhookAttempt(models.Model):
    """One try of a delivery and what the receiver answered."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.TextField(blank=True, help_text="The start of the receiver's answer")
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"#{self.number}: {self.status_code or self.error}"


class StoppedWebhookUrl(models.Model):
    """A callback URL that answered 410 Gone: nothing more is sent there for the client. Delete the
    row to send there again."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="stopped_webhook_urls")
    url = models.URLField(max_length=500)
    reason = models.CharField(max_length=200, blank=True)
    stopped_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "url"], name="stopped_webhook_url_unique")]

    def __str__(self) -> str:
        return f"{self.url} ({self.client})"
