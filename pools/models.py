"""Worker pools and model profiles: the live configuration, seeded from config.json."""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

PRICE = {
    "max_digits": 10,
    "decimal_places": 4,
    "default": Decimal("0"),
    "validators": [MinValueValidator(Decimal("0"))],
    "help_text": "USD per million tokens",
}


# Only variables meant to hold a model key may be sent to a model's base URL: a profile naming
# SECRET_KEY or DATABASE_URL would otherwise ship that secret to whatever server it points at.
API_KEY_ENV_PATTERN = r"^[A-Z][A-Z0-9_]*_API_KEY$"


class ModelProfile(models.Model):
    PROVIDERS = [
        ("anthropic", "Anthropic"),
        ("openai", "OpenAI-compatible"),
        ("offline", "Offline (built in)"),
    ]

    name = models.SlugField(max_length=64, unique=True, help_text="Name used by pools in config.json")
    provider = models.CharField(max_length=16, choices=PROVIDERS)
    model = models.CharField(max_length=128, help_text="Model id sent to the provider")
    base_url = models.URLField(blank=True, help_text="Empty: the SDK's own *_BASE_URL variable applies")
    api_key_env = models.CharField(
        max_length=64,
        blank=True,
        help_text="Name of the environment variable holding the key (keys never live in the database)",
        validators=[RegexValidator(API_KEY_ENV_PATTERN, "A variable named *_API_KEY, e.g. MINIMAX_API_KEY")],
    )
    input_per_mtok = models.DecimalField(**PRICE)
    output_per_mtok = models.DecimalField(**PRICE)
    cache_read_per_mtok = models.DecimalField(**PRICE)
    cache_write_per_mtok = models.DecimalField(**PRICE)
    max_output_tokens = models.PositiveIntegerField(default=8192)
    # Offline provider only: simulated latency and failures, for demos, tests and benchmarks.
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}:{self.model})"

    def clean(self) -> None:
        if self.provider == "offline" and (self.base_url or self.api_key_env):
            raise ValidationError("The offline provider takes neither a base URL nor an API key variable.")


class PoolRole(models.TextChoices):
    """What a pool's agents do. Verification, conflicts and remediation key on the role, never on
    the pool's name: names are data that admins edit."""

    CODEGEN = "codegen", "code generation"
    SECURITY = "security", "security audit"
    DATABASE = "database", "database schema"
    OTHER = "other", "other"


# What an agent of each role typically writes, in output tokens (estimates before any history).
DEFAULT_OUTPUT_TOKENS = {PoolRole.CODEGEN: 3000, PoolRole.SECURITY: 1200, PoolRole.DATABASE: 1500}


def role_for_name(name: str) -> str:
    """The role a new pool gets from its name when none is given (config.json's seed pools)."""
    return name if name in PoolRole.values else PoolRole.OTHER


class WorkerPool(models.Model):
    name = models.SlugField(max_length=32, unique=True)
    role = models.CharField(
        max_length=16,
        choices=PoolRole.choices,
        default=PoolRole.OTHER,
        help_text="What its agents do: verification, audits and remediation follow the role, not the name",
    )
    expected_output_tokens = models.PositiveIntegerField(
        default=1500,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Typical output of one attempt, for cost estimates and progress before any history",
    )
    enabled = models.BooleanField(default=True)
    max_concurrent = models.PositiveIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(256)]
    )
    timeout_sec = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(7200)]
    )
    max_retries = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(10)])
    max_turns = models.PositiveIntegerField(
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(200)],
        help_text="Model calls one attempt may make in its tool loop (1: a single reply, no tools)",
    )
    run_timeout_sec = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="Wall-clock limit of one sandboxed command an agent runs",
    )
    retry_backoff_sec = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)],
        help_text="First retry waits this long; each further retry doubles it",
    )
    model = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="pools"
    )
    # Simulated agent latency (seconds) when this pool's model is offline.
    offline_latency_sec = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Any model may fall back to offline (no key), so the simulated latency must fit the timeout.
        if self.offline_latency_sec >= self.timeout_sec:
            raise ValidationError(
                {"offline_latency_sec": "Must stay below timeout_sec, or every offline attempt times out."}
            )

    def backoff_for(self, failed_attempts: int) -> float:
        return self.retry_backoff_sec * (2 ** max(0, failed_attempts - 1))


class EngineSettings(models.Model):
    """The `parallel_execution` switches of config.json (one row)."""

    enabled = models.BooleanField(default=True)
    auto_fallback_to_serial = models.BooleanField(default=True)
    pm_model = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    synthesis_model = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    remediation_max_rounds = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(10)])
    max_tasks_per_plan = models.PositiveIntegerField(
        default=50, validators=[MinValueValidator(1), MaxValueValidator(500)]
    )

    class Meta:
        verbose_name_plural = "engine settings"

    def __str__(self) -> str:
        return "Engine settings"

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def current(cls) -> "EngineSettings":
        obj, _ = cls.objects.select_related("pm_model", "synthesis_model").get_or_create(pk=1)
        return obj


class ConfigChange(models.Model):
    """One changed field of the live configuration: who, when, which object, old → new. Append-only."""

    changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150, help_text="Username, or the command that made the change")
    object_type = models.CharField(max_length=100, help_text="app_label.model")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    field = models.CharField(max_length=64)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.object_repr}.{self.field}: {self.old_value} → {self.new_value}"
