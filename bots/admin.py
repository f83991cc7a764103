from django.contrib import admin

from .models import SlackEventReceipt, SlackThread, SlackUserMapping, SlackWorkspace


@admin.register(SlackWorkspace)
class SlackWorkspaceAdmin(admin.ModelAdmin):
    list_display = ["team_id", "name", "client", "restrict_to_mapped_users", "created_at"]
    list_filter = ["restrict_to_mapped_users"]  # the workspaces open to every member
    search_fields = ["team_id", "name", "client__name"]


@admin.register(SlackUserMapping)
class SlackUserMappingAdmin(admin.ModelAdmin):
    list_display = ["team_id", "user_id", "allowed", "client", "note"]
    list_filter = ["allowed"]
    search_fields = ["team_id", "user_id", "note"]


@admin.register(SlackThread)
class SlackThreadAdmin(admin.ModelAdmin):
    list_display = ["execution", "team_id", "channel_id", "user_id", "thread_ts", "status_ts", "synced_at"]
    search_fields = ["execution__id", "team_id", "channel_id", "user_id"]
    readonly_fields = ["rendered_hash", "posted_milestones", "sync_lease_until", "failures"]
    raw_id_fields = ["execution"]


@admin.register(SlackEventReceipt)
class SlackEventReceiptAdmin(admin.ModelAdmin):
    list_display = ["key", "team_id", "execution", "received_at"]
    search_fields = ["key", "team_id"]
    raw_id_fields = ["execution"]
