"""config.json ⇄ database. Loading only creates what is missing unless forced, so admin edits survive."""

import json
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from .models import EngineSettings, ModelProfile, WorkerPool

POOL_FIELDS = ("enabled", "max_concurrent", "timeout_sec", "max_retries", "retry_backoff_sec", "offline_latency_sec")
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
MODEL_FIELDS = ("provider", "model", "base_url", "api_key_env", "max_output_tokens", "options") + PRICE_FIELDS


class ConfigError(ValueError):
    pass


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


@transaction.atomic
def load_config(data: dict, *, force: bool = False) -> dict[str, int]:
    """Create (or with force, overwrite) models, pools and engine settings from a config object."""
    section = data.get("parallel_execution")
    if not isinstance(section, dict):
        raise ConfigError('config needs a "parallel_execution" object')
    created = {"models": 0, "pools": 0}
    profiles: dict[str, ModelProfile] = {}
    for name, spec in (data.get("models") or {}).items():
        if spec.get("provider") not in dict(ModelProfile.PROVIDERS):
            raise ConfigError(f"model {name}: provider must be anthropic, openai or offline")
        values = {k: spec[k] for k in MODEL_FIELDS if k in spec}
        for k in PRICE_FIELDS:
            if k in values:
                values[k] = Decimal(str(values[k]))
        profile, was_created = ModelProfile.objects.get_or_create(name=name, defaults=values)
        if force and not was_created:
            for k, v in values.items():
                setattr(profile, k, v)
            profile.save()
        created["models"] += was_created
        profiles[name] = profile
    for name, spec in (section.get("worker_pools") or {}).items():
        values = {k: spec[k] for k in POOL_FIELDS if k in spec}
        values["model"] = _profile_for(spec.get("model"), profiles)
        pool, was_created = WorkerPool.objects.get_or_create(name=name, defaults=values)
        if force and not was_created:
            for k, v in values.items():
                setattr(pool, k, v)
            pool.save()
        pool.full_clean()
        created["pools"] += was_created
    engine = EngineSettings.current()
    if force or not EngineSettings.objects.filter(pk=1, pm_model__isnull=False).exists():
        pm = section.get("pm") or {}
        engine.enabled = bool(section.get("enabled", True))
        engine.auto_fallback_to_serial = bool(section.get("auto_fallback_to_serial", True))
        engine.pm_model = _profile_for(pm.get("model"), profiles)
        engine.synthesis_model = _profile_for(pm.get("synthesis_model"), profiles) or engine.pm_model
        engine.remediation_max_rounds = int((section.get("remediation") or {}).get("max_rounds", 2))
        engine.max_tasks_per_plan = int(section.get("max_tasks_per_plan", 50))
        engine.save()
    return created


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
    return {
        "parallel_execution": {
            "enabled": engine.enabled, "auto_fallback_to_serial": engine.auto_fallback_to_serial, "pm": pm,
            "remediation": {"max_rounds": engine.remediation_max_rounds},
            "max_tasks_per_plan": engine.max_tasks_per_plan, "worker_pools": pools,
        },
        "models": models,
    }
