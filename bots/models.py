"""Slack: which workspace bills which client, who may act, and the thread that follows an execution."""

from django.db import models
from django.utils import timezone

from executions.models import Client, Execution


class SlackWorkspace(models.Model):
    """A Slack workspace (team) linked to the client its requests are billed to."""

    team_id = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100, blank=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="slack_workspaces")
    restrict_to_mapped_users = models.BooleanField(
        default=True,
        help_text="Only users with an allowed user mapping may start or act on executions "
        "(off: every member of the workspace may)",
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name or self.team_id} → {self.client}"


class SlackUserMapping(models.Model):
    """A per-user rule inside a workspace: deny a user, or bill a user's requests to another client."""

    team_id = models.CharField(max_length=32)
    user_id = models.CharField(max_length=32)
    allowed = models.BooleanField(default=True)
    client = models.ForeignKey(
        Client,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="slack_users",
        help_text="Bills this user's requests to this client instead of the workspace's",
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team_id", "user_id"], name="slack_user_unique_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.user_id} ({'allowed' if self.allowed else 'denied'})"


class SlackThread(models.Model):
    """The Slack thread that follows one execution: its status message and what was already posted."""

    execution = models.OneToOneField(Execution, on_delete=models.CASCADE, related_name="slack_thread")
    team_id = models.CharField(max_length=32)
    user_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32)
    # The thread's parent: the user's mention, or (for a slash command) our own status message.
    thread_ts = models.CharField(max_length=32, blank=True)
    status_ts = models.CharField(max_length=32, blank=True)
    rendered_hash = models.CharField(max_length=64, blank=True)
    posted_milestones = models.JSONField(default=list, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed syncs in a row (Slack errors)")
    # A sync holds this lease while it talks to Slack, so two workers never post the same message.
    sync_lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.execution_id} in {self.channel_id}"


class SlackEventReceipt(models.Model):
    """One delivery we acted on (event_id, or trigger_id for commands): a retry starts nothing twice."""

    key = models.CharField(max_length=120, unique=True)
    team_id = models.CharField(max_length=32, blank=True)
    execution = models.ForeignKey(Execution, null=True, blank=True, on_delete=models.SET_NULL)
    received_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.key
