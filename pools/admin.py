"""Admin for the live configuration: models, engine settings, and the audit trail of changes.

Edits take effect at the next dispatch. The pools' admin, which shows their live load, lives with
the tasks it counts (`executions/admin.py`).
"""

import os

from django.contrib import admin

from .audit import record_changes, record_deletion, snapshot
from .models import ConfigChange, EngineSettings, ModelProfile


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the system writes (ledger, executions, the audit trail), never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Every save and delete through the admin is written to the ConfigChange trail."""

    def save_model(self, request, obj, form, change):
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
        super().save_model(request, obj, form, change)
        record_changes(obj, before, user=request.user)

    def delete_model(self, request, obj):
        record_deletion(obj, user=request.user)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            record_deletion(obj, user=request.user)
        super().delete_queryset(request, queryset)


@admin.register(ModelProfile)
class ModelProfileAdmin(AuditedAdmin):
    list_display = (
        "name",
        "provider",
        "model",
        "base_url",
        "api_key_env",
        "key_status",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
    )
    list_filter = ("provider",)
    search_fields = ("name", "model")
    fieldsets = (
        (None, {"fields": ("name", "provider", "model", "base_url", "api_key_env", "max_output_tokens")}),
        (
            "Prices (USD per million tokens)",
            {"fields": ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")},
        ),
        ("Offline provider", {"fields": ("options",), "classes": ("collapse",)}),
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "base_url":
            kwargs["assume_scheme"] = "https"  # a bare host means the provider's HTTPS endpoint
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="API key")
    def key_status(self, obj: ModelProfile) -> str:
        """Whether the key's variable is set in this process (the key itself is never shown or stored)."""
        if obj.provider == "offline":
            return "not needed"
        name = obj.api_key_env or {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}[obj.provider]
        return f"{name} set" if os.environ.get(name) else f"{name} missing: runs offline"


@admin.register(EngineSettings)
class EngineSettingsAdmin(AuditedAdmin):
    list_display = (
        "__str__",
        "enabled",
        "auto_fallback_to_serial",
        "pm_model",
        "synthesis_model",
        "remediation_max_rounds",
        "max_tasks_per_plan",
    )

    def has_add_permission(self, request):
        return not EngineSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConfigChange)
class ConfigChangeAdmin(ReadOnlyAdmin):
    """Read-only: the trail is written by the admin and load_config, never edited."""

    list_display = ("changed_at", "actor", "object_type", "object_repr", "field", "old_value", "new_value")
    list_filter = ("object_type", "actor")
    search_fields = ("object_repr", "field", "actor")
    date_hierarchy = "changed_at"
