"""Worker pools and model profiles: the live configuration, seeded from config.json."""

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class ModelProfile(models.Model):
    PROVIDERS = [("anthropic", "Anthropic"), ("openai", "OpenAI-compatible"), ("offline", "Offline (built in)")]

    name = models.SlugField(max_length=64, unique=True, help_text="Name used by pools in config.json")
    provider = models.CharField(max_length=16, choices=PROVIDERS)
    model = models.CharField(max_length=128, help_text="Model id sent to the provider")
    base_url = models.URLField(blank=True, help_text="Empty: the SDK's own *_BASE_URL variable applies")
    api_key_env = models.CharField(
        max_length=64, blank=True, help_text="Environment variable holding the key (keys never live in the database)"
    )
    input_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    output_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    cache_read_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    cache_write_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    max_output_tokens = models.PositiveIntegerField(default=8192)
    # Offline provider only: simulated latency and failures, for demos, tests and benchmarks.
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}:{self.model})"


class WorkerPool(models.Model):
    name = models.SlugField(max_length=32, unique=True)
    enabled = models.BooleanField(default=True)
    max_concurrent = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1), MaxValueValidator(256)])
    timeout_sec = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1), MaxValueValidator(7200)])
    max_retries = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(10)])
    retry_backoff_sec = models.FloatField(
        default=2.0, validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)],
        help_text="First retry waits this long; each further retry doubles it",
    )
    model = models.ForeignKey(ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="pools")
    # Simulated agent latency (seconds) when this pool's model is offline.
    offline_latency_sec = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_name(self) -> str:
        return f"pool.{self.name}"

    def backoff_for(self, failed_attempts: int) -> float:
        return self.retry_backoff_sec * (2 ** max(0, failed_attempts - 1))


class EngineSettings(models.Model):
    """The `parallel_execution` switches of config.json (one row)."""

    enabled = models.BooleanField(default=True)
    auto_fallback_to_serial = models.BooleanField(default=True)
    pm_model = models.ForeignKey(ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    synthesis_model = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    remediation_max_rounds = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(10)])
    max_tasks_per_plan = models.PositiveIntegerField(default=50, validators=[MinValueValidator(1), MaxValueValidator(500)])

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
