"""Admin for clients and keys, billing policies, executions (read-only, with cancel and retry) and
webhook deliveries (read-only, with resend)."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils.html import format_html, format_html_join

from pools.admin import AuditedAdmin, ReadOnlyAdmin
from pools.audit import record_changes, snapshot
from pools.models import WorkerPool

from . import services, webhooks
from .api_keys import api_key_issue, api_key_revoke, api_key_rotate
from .invoices import execution_invoice
from .models import (
    ApiKey,
    Attempt,
    Client,
    Conflict,
    Event,
    Execution,
    LedgerEntry,
    PricingPolicy,
    RefundPolicy,
    StoppedWebhookUrl,
    Task,
    WebhookAttempt,
    WebhookDelivery,
)
from .states import ApprovalMode, TaskStatus


def show_new_key(request, client: Client, raw: str) -> None:
    """The raw key is shown this once; only its hash is stored."""
    messages.warning(
        request, f"New API key for {client.name}: {raw} — copy it now, it will not be shown again."
    )


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# ---------------------------------------------------------------- clients and keys


class ApiKeyInline(ReadOnlyInline):
    model = ApiKey
    fields = ("prefix", "created_at", "revoked_at")


class ClientForm(forms.ModelForm):
    default_callback_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=Client._meta.get_field("default_callback_url").help_text,
    )

    class Meta:
        model = Client
        fields = ("name", "is_active", "default_budget_usd", "default_approval", "default_callback_url")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_approval"].required = False  # left out: starts at once, as before

    def clean_default_approval(self) -> str:
        return self.cleaned_data["default_approval"] or ApprovalMode.AUTO

    def clean_default_callback_url(self) -> str:
        url = self.cleaned_data["default_callback_url"]
        if url:
            try:
                webhooks.callback_url_check(url)
            except webhooks.CallbackUrlRefused as exc:
                raise forms.ValidationError(str(exc)) from None
        return url


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    form = ClientForm
    list_display = (
        "name",
        "is_active",
        "default_budget_usd",
        "default_approval",
        "active_keys",
        "created_at",
    )
    list_filter = ("is_active", "default_approval")
    search_fields = ("name",)
    fields = ("name", "is_active", "default_budget_usd", "default_approval", "default_callback_url")
    inlines = [ApiKeyInline]
    actions = ["issue_key"]

    @admin.display(description="active keys")
    def active_keys(self, obj: Client) -> int:
        return obj.api_keys.filter(revoked_at__isnull=True).count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            _, raw = api_key_issue(client=obj)
            show_new_key(request, obj, raw)

    @admin.action(description="Issue a new API key")
    def issue_key(self, request, queryset):
        for client in queryset:
            _, raw = api_key_issue(client=client)
            show_new_key(request, client, raw)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued (add), revoked or rotated (actions); never edited. Only the hash is stored."""

    list_display = ("prefix", "client", "created_at", "revoked_at", "state")
    list_filter = ("client", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "client__name")
    readonly_fields = ("prefix", "created_at", "revoked_at")
    actions = ["revoke", "rotate"]

    def get_fields(self, request, obj=None):
        return ("client",) if obj is None else ("client", "prefix", "created_at", "revoked_at")

    def has_change_permission(self, request, obj=None):
        return False

    def has_manage_permission(self, request) -> bool:
        return request.user.has_perm("executions.change_apikey")

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return "revoked" if obj.revoked_at else "active"

    def save_model(self, request, obj, form, change):
        issued, raw = api_key_issue(client=obj.client)
        # The admin goes on with `obj` (log entry, redirect): make it the issued row.
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            issued.pk,
            issued.prefix,
            issued.key_hash,
            issued.created_at,
        )
        obj._state.adding = False
        show_new_key(request, obj.client, raw)

    @admin.action(description="Revoke the selected keys", permissions=["manage"])
    def revoke(self, request, queryset):
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        messages.success(request, f"Revoked {revoked} key(s).")

    @admin.action(description="Rotate: revoke and issue a new key", permissions=["manage"])
    def rotate(self, request, queryset):
        for key in queryset.select_related("client"):
            _, raw = api_key_rotate(key=key)
            show_new_key(request, key.client, raw)


# ---------------------------------------------------------------- billing policies


class PolicyAdmin(AuditedAdmin):
    actions = ["activate"]

    def save_model(self, request, obj, form, change):
        # Activating one retires the active one: record that too.
        retired = []
        if obj.is_active:
            retired = [(p, snapshot(p)) for p in type(obj).objects.filter(is_active=True).exclude(pk=obj.pk)]
        super().save_model(request, obj, form, change)
        for policy, before in retired:
            policy.refresh_from_db()
            record_changes(policy, before, user=request.user)

    @admin.action(description="Make the selected policy the active one")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Select exactly one policy to activate.")
            return
        policy = queryset.get()
        policy.is_active = True
        self.save_model(request, policy, None, True)
        messages.success(request, f"{policy.name} is now the active {policy._meta.verbose_name}.")


# The seed's restaurant project: backend (90 s) and security (120 s) lost → the seed refunds 60%.
SEED_EXAMPLE = [
    ("frontend", 60, TaskStatus.SUCCEEDED),
    ("backend", 90, TaskStatus.DEAD),
    ("database", 45, TaskStatus.SUCCEEDED),
    ("security", 120, TaskStatus.BLOCKED),
]


@admin.register(RefundPolicy)
class RefundPolicyAdmin(PolicyAdmin):
    list_display = (
        "name",
        "is_active",
        "share_rule",
        "factor",
        "floor_share",
        "cap_share",
        "on_partial",
        "on_budget_exceeded",
        "on_failed",
        "on_cancelled_before_start",
        "on_cancelled_after_start",
        "seed_example",
    )
    fieldsets = (
        (None, {"fields": ("name", "is_active", "description")}),
        ("Undelivered work", {"fields": ("share_rule", "factor", "floor_share", "cap_share")}),
        (
            "By final status",
            {
                "fields": (
                    "on_partial",
                    "on_budget_exceeded",
                    "on_failed",
                    "on_cancelled_before_start",
                    "on_cancelled_after_start",
                )
            },
        ),
    )

    @admin.display(description="seed example (backend + security lost)")
    def seed_example(self, obj: RefundPolicy) -> str:
        tasks = [Task(key=k, weight=w, status=s, kind="plan", started_at=None) for k, w, s in SEED_EXAMPLE]
        share = obj.refund_share("partial", tasks)
        return f"{share * 100:.1f}% of the fee (${Decimal('3.20') * share:.2f} of $3.20)"


@admin.register(PricingPolicy)
class PricingPolicyAdmin(PolicyAdmin):
    list_display = ("name", "is_active", "method", "fee_per_task", "markup", "minimum_fee", "description")
    fields = ("name", "is_active", "description", "method", "fee_per_task", "markup", "minimum_fee")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    """The ledger is written by billing only."""

    list_display = (
        "created_at",
        "client",
        "execution",
        "kind",
        "amount_usd",
        "pool",
        "model",
        "tokens_in",
        "tokens_out",
        "description",
    )
    list_filter = ("kind", "client", "pool")
    search_fields = ("key", "execution__id")
    list_select_related = ("client",)


# ---------------------------------------------------------------- executions


class TaskInline(ReadOnlyInline):
    model = Task
    fields = (
        "key",
        "pool",
        "kind",
        "status",
        "priority",
        "blocked_by",
        "failed_attempts",
        "started_at",
        "finished_at",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "weight",
        "error",
    )


class ConflictInline(ReadOnlyInline):
    model = Conflict
    fields = ("kind", "status", "between", "description", "resolution", "rounds", "created_at", "resolved_at")


class EventInline(ReadOnlyInline):
    model = Event
    fields = ("seq", "type", "task_key", "payload", "created_at")


class LedgerInline(ReadOnlyInline):
    model = LedgerEntry
    fields = (
        "kind",
        "key",
        "amount_usd",
        "pool",
        "model",
        "tokens_in",
        "tokens_out",
        "description",
        "created_at",
    )


class WebhookDeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ("delivery_id", "event", "url", "status", "attempts", "last_status_code", "next_attempt_at")
    readonly_fields = fields
    show_change_link = True


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
    """Read-only; the only ways to act on an execution are its services (cancel, retry)."""

    list_display = (
        "id",
        "client",
        "status",
        "mode",
        "project",
        "created_at",
        "duration_sec",
        "cost_usd",
        "fee_usd",
        "refund_usd",
        "budget_usd",
    )
    list_filter = ("status", "mode", "client")
    search_fields = ("id", "project", "message")
    date_hierarchy = "created_at"
    list_select_related = ("client",)
    inlines = [TaskInline, ConflictInline, EventInline, LedgerInline, WebhookDeliveryInline]
    actions = ["cancel", "retry"]
    readonly_fields = ("attempts", "invoice")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "client",
                    "status",
                    "mode",
                    "requested_mode",
                    "routing_reason",
                    "project",
                    "follows",
                    "message",
                    "error",
                )
            },
        ),
        (
            "Approval and webhooks",
            {"fields": ("approval", "approval_expires_at", "quoted_fee_usd", "callback_url")},
        ),
        (
            "Plan and timing",
            {
                "fields": (
                    "plan_source",
                    "plan_notes",
                    "estimated_duration_sec",
                    "serial_estimate_sec",
                    "created_at",
                    "started_at",
                    "finished_at",
                )
            },
        ),
        (
            "Cost",
            {
                "fields": (
                    "budget_usd",
                    "estimated_cost_usd",
                    "cost_usd",
                    "fee_usd",
                    "refund_usd",
                    "tokens_in",
                    "tokens_out",
                    "invoice",
                )
            },
        ),
        ("Result", {"fields": ("final_response", "quality_score")}),
        ("Attempts", {"fields": ("attempts",)}),
    )

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("executions.change_execution")

    @admin.display(description="attempts")
    def attempts(self, obj: Execution) -> str:
        rows = Attempt.objects.filter(task__execution=obj).select_related("task").order_by("started_at")
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.task.key,
                    a.number,
                    a.status,
                    a.worker,
                    a.model,
                    a.duration_sec,
                    a.tokens_in + a.tokens_out,
                    a.cost_usd,
                    a.error[:200],
                )
                for a in rows
            ),
        )
        return format_html(
            "<table><tr><th>task</th><th>#</th><th>status</th><th>worker</th><th>model</th><th>seconds</th>"
            "<th>tokens</th><th>cost</th><th>error</th></tr>{}</table>",
            body,
        )

    @admin.display(description="invoice")
    def invoice(self, obj: Execution) -> str:
        totals = execution_invoice(obj)["totals"]
        return format_html(
            "usage ${} · fee ${} · refund ${} · net ${}",
            totals["usage_usd"],
            totals["fee_usd"],
            totals["refund_usd"],
            totals["net_usd"],
        )

    @admin.action(description="Cancel the selected executions", permissions=["operate"])
    def cancel(self, request, queryset):
        done = sum(
            services.execution_cancel(execution, by=f"admin {request.user.get_username()}")
            for execution in queryset
        )
        messages.success(request, f"Cancelled {done} execution(s).")

    @admin.action(description="Retry dead and blocked tasks", permissions=["operate"])
    def retry(self, request, queryset):
        reopened = sum(services.execution_retry(execution) for execution in queryset)
        messages.success(request, f"Reopened {reopened} task(s).")


@admin.register(WorkerPool)
class WorkerPoolAdmin(AuditedAdmin):
    list_display = (
        "name",
        "role",
        "enabled",
        "max_concurrent",
        "timeout_sec",
        "max_retries",
        "retry_backoff_sec",
        "model",
        "offline_latency_sec",
        "ready",
        "active",
    )
    list_editable = ("enabled", "max_concurrent", "timeout_sec", "max_retries")
    fields = (
        "name",
        "role",
        "expected_output_tokens",
        "enabled",
        "max_concurrent",
        "timeout_sec",
        "max_retries",
        "max_turns",
        "run_timeout_sec",
        "retry_backoff_sec",
        "model",
        "offline_latency_sec",
    )

    def get_queryset(self, request):
        def count(statuses):
            rows = Task.objects.filter(pool=OuterRef("name"), status__in=statuses).order_by().values("pool")
            return Coalesce(Subquery(rows.annotate(n=Count("id")).values("n")), 0)

        return (
            super()
            .get_queryset(request)
            .select_related("model")
            .annotate(
                ready_tasks=count([TaskStatus.READY]),
                active_tasks=count([TaskStatus.QUEUED, TaskStatus.RUNNING]),
            )
        )

    @admin.display(description="ready")
    def ready(self, obj: WorkerPool) -> int:
        return obj.ready_tasks

    @admin.display(description="queued + running")
    def active(self, obj: WorkerPool) -> int:
        return obj.active_tasks


# ---------------------------------------------------------------- webhooks


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Every webhook sent or to send, its attempts and the receiver's answers; resend one."""

    list_display = (
        "delivery_id",
        "event",
        "execution",
        "client",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event", "client")
    search_fields = ("delivery_id", "execution__id", "url")
    list_select_related = ("client",)
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    actions = ["resend"]
    fields = (
        "delivery_id",
        "execution",
        "client",
        "event",
        "url",
        "status",
        "attempts",
        "next_attempt_at",
        "retrying_since",
        "last_status_code",
        "last_error",
        "created_at",
        "finished_at",
        "body",
    )
    readonly_fields = fields

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("executions.change_execution")

    @admin.action(description="Send again (same delivery id, new round of retries)", permissions=["operate"])
    def resend(self, request, queryset):
        resent = sum(webhooks.webhook_delivery_resend(delivery=d) for d in queryset)
        skipped = queryset.count() - resent
        messages.success(
            request,
            f"Sending {resent} delivery(ies) again."
            + (f" {skipped} still pending: they are retried on their own." if skipped else ""),
        )


@admin.register(StoppedWebhookUrl)
class StoppedWebhookUrlAdmin(admin.ModelAdmin):
    """URLs that answered 410 Gone; delete one to send webhooks there again."""

    list_display = ("url", "client", "reason", "stopped_at")
    list_filter = ("client",)
    readonly_fields = ("client", "url", "reason", "stopped_at")

    def has_add_permission(self, request):
        return False
