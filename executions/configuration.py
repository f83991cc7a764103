"""config.json ⇄ database. Loading only creates what is missing unless forced, so admin edits survive."""

import json
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from pools.audit import record_changes, snapshot
from pools.models import DEFAULT_OUTPUT_TOKENS, EngineSettings, ModelProfile, WorkerPool, role_for_name

from .models import PricingPolicy, RefundPolicy

POOL_FIELDS = (
    "role",
    "expected_output_tokens",
    "enabled",
    "max_concurrent",
    "timeout_sec",
    "max_retries",
    "max_turns",
    "run_timeout_sec",
    "retry_backoff_sec",
    "offline_latency_sec",
)
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
MODEL_FIELDS = ("provider", "model", "base_url", "api_key_env", "max_output_tokens", "options") + PRICE_FIELDS
REFUND_FIELDS = (
    "description",
    "share_rule",
    "factor",
    "floor_share",
    "cap_share",
    "on_partial",
    "on_budget_exceeded",
    "on_failed",
    "on_cancelled_before_start",
    "on_cancelled_after_start",
)
PRICING_FIELDS = ("description", "method", "fee_per_task", "markup", "minimum_fee")
DECIMAL_POLICY_FIELDS = ("factor", "floor_share", "cap_share", "fee_per_task", "markup", "minimum_fee")


class ConfigError(ValueError):
    """config.json (or a dump to load) that cannot be applied; the message says where."""


def _profile_for(name: str | None, profiles: dict[str, ModelProfile]) -> ModelProfile | None:
    """A pool's `model`: a key of `models`, or a bare model id as in the seed (claude-* → anthropic)."""
    if not name:
        return None
    if name in profiles:
        return profiles[name]
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name).strip("-").lower()[:64]
    provider = "anthropic" if name.startswith("claude") else "openai"
    profile, _ = ModelProfile.objects.get_or_create(name=slug, defaults={"provider": provider, "model": name})
    profiles[name] = profile
    return profile


LOADER = "load_config"


def _upsert(model, name: str, values: dict, *, force: bool):
    """get_or_create by name; with force, overwrite from the file (recorded in the audit trail)."""
    obj, created = model.objects.get_or_create(name=name, defaults=values)
    if created:
        record_changes(obj, None, actor=LOADER)
    elif force:
        before = snapshot(obj)
        for k, v in values.items():
            setattr(obj, k, v)
        obj.full_clean()
        obj.save()
        record_changes(obj, before, actor=f"{LOADER} --force")
    return obj, created


def _decimals(values: dict, fields: tuple[str, ...]) -> dict:
    return {k: Decimal(str(v)) if k in fields else v for k, v in values.items()}


@transaction.atomic
def load_config(data: dict, *, force: bool = False) -> dict[str, int]:
    """Create (or with force, overwrite) models, pools, engine settings and billing policies from a
    config object. Without force only what is missing is created, so loading twice changes nothing."""
    section = data.get("parallel_execution")
    if not isinstance(section, dict):
        raise ConfigError('config needs a "parallel_execution" object')
    created = {"models": 0, "pools": 0, "policies": 0}
    profiles: dict[str, ModelProfile] = {}
    for name, spec in (data.get("models") or {}).items():
        if spec.get("provider") not in dict(ModelProfile.PROVIDERS):
            raise ConfigError(f"model {name}: provider must be anthropic, openai or offline")
        values = _decimals({k: spec[k] for k in MODEL_FIELDS if k in spec}, PRICE_FIELDS)
        profile, was_created = _upsert(ModelProfile, name, values, force=force)
        created["models"] += was_created
        profiles[name] = profile
    for name, spec in (section.get("worker_pools") or {}).items():
        values = {k: spec[k] for k in POOL_FIELDS if k in spec}
        values.setdefault("role", role_for_name(name))
        values.setdefault("expected_output_tokens", DEFAULT_OUTPUT_TOKENS.get(values["role"], 1500))
        values["model"] = _profile_for(spec.get("model"), profiles)
        pool, was_created = _upsert(WorkerPool, name, values, force=force)
        pool.full_clean()
        created["pools"] += was_created
    engine = EngineSettings.current()
    if force or not EngineSettings.objects.filter(pk=1, pm_model__isnull=False).exists():
        before = snapshot(engine)
        pm = section.get("pm") or {}
        engine.enabled = bool(section.get("enabled", True))
        engine.auto_fallback_to_serial = bool(section.get("auto_fallback_to_serial", True))
        engine.pm_model = _profile_for(pm.get("model"), profiles)
        engine.synthesis_model = _profile_for(pm.get("synthesis_model"), profiles) or engine.pm_model
        engine.remediation_max_rounds = int((section.get("remediation") or {}).get("max_rounds", 2))
        engine.max_tasks_per_plan = int(section.get("max_tasks_per_plan", 50))
        engine.save()
        record_changes(engine, before, actor=LOADER)
    for key, model, fields in (
        ("refund_policy", RefundPolicy, REFUND_FIELDS),
        ("pricing", PricingPolicy, PRICING_FIELDS),
    ):
        spec = (data.get("billing") or {}).get(key)
        if spec:
            created["policies"] += _load_policy(model, spec, fields, force=force)
    return created


def _load_policy(model, spec: dict, fields: tuple[str, ...], *, force: bool) -> bool:
    """A policy from the file; it becomes the active one when forced or when none is active yet."""
    if not spec.get("name"):
        raise ConfigError(f"billing: the {model._meta.verbose_name} needs a name")
    values = _decimals({k: spec[k] for k in fields if k in spec}, DECIMAL_POLICY_FIELDS)
    values["is_active"] = force or not model.objects.filter(is_active=True).exists()
    policy, was_created = _upsert(model, spec["name"], values, force=force)
    policy.full_clean()
    return was_created


def load_config_file(path: str | Path, *, force: bool = False) -> dict[str, int]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return load_config(data, force=force)


def dump_config() -> dict:
    """What the database holds, in config.json's format."""
    engine = EngineSettings.current()
    pools = {}
    for pool in WorkerPool.objects.select_related("model"):
        entry = {k: getattr(pool, k) for k in POOL_FIELDS}
        if pool.model:
            entry["model"] = pool.model.name
        pools[pool.name] = entry
    models = {}
    for profile in ModelProfile.objects.all():
        entry = {k: getattr(profile, k) for k in MODEL_FIELDS}
        for k in PRICE_FIELDS:
            entry[k] = float(entry[k])
        models[profile.name] = {k: v for k, v in entry.items() if v not in ("", {}, None)}
    pm = {}
    if engine.pm_model:
        pm["model"] = engine.pm_model.name
    if engine.synthesis_model:
        pm["synthesis_model"] = engine.synthesis_model.name
    billing = {}
    for key, model, fields in (
        ("refund_policy", RefundPolicy, REFUND_FIELDS),
        ("pricing", PricingPolicy, PRICING_FIELDS),
    ):
        policy = model.objects.filter(is_active=True).first()
        if policy:
            billing[key] = {
                "name": policy.name,
                **{
                    k: float(getattr(policy, k)) if k in DECIMAL_POLICY_FIELDS else getattr(policy, k)
                    for k in fields
                },
            }
    return {
        "parallel_execution": {
            "enabled": engine.enabled,
            "auto_fallback_to_serial": engine.auto_fallback_to_serial,
            "pm": pm,
            "remediation": {"max_rounds": engine.remediation_max_rounds},
            "max_tasks_per_plan": engine.max_tasks_per_plan,
            "worker_pools": pools,
        },
        "models": models,
        "billing": billing,
    }
