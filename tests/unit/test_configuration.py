"""config.json ⇄ database: loading is idempotent, dumping writes what the admin holds."""

import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command

from executions.configuration import dump_config, load_config
from executions.models import PricingPolicy, RefundPolicy
from pools.models import ConfigChange, ModelProfile, WorkerPool

pytestmark = pytest.mark.django_db


def shipped_config() -> dict:
    return json.loads(open(settings.OPENCLAW_CONFIG).read())


def config_rows() -> tuple:
    def rows(model):
        return [
            {k: v for k, v in row.items() if k != "updated_at"}
            for row in model.objects.order_by("pk").values()
        ]

    return (
        rows(WorkerPool),
        rows(ModelProfile),
        rows(RefundPolicy),
        rows(PricingPolicy),
        ConfigChange.objects.count(),
    )


def test_loading_twice_changes_nothing():
    first = load_config(shipped_config())
    assert first["pools"] == 3 and first["models"] == 4
    before = config_rows()
    assert load_config(shipped_config()) == {"models": 0, "pools": 0, "policies": 0}
    assert config_rows() == before
    # Forcing the same file rewrites the rows with the values they already hold: no change recorded.
    assert load_config(shipped_config(), force=True) == {"models": 0, "pools": 0, "policies": 0}
    assert config_rows() == before


def test_admin_edits_survive_a_load_and_are_dumped(tmp_path):
    load_config(shipped_config())
    WorkerPool.objects.filter(name="security").update(max_concurrent=1, timeout_sec=900)
    RefundPolicy.objects.create(name="by-count", is_active=True, share_rule="count", factor=Decimal("0.75"))
    load_config(shipped_config())  # start-up load: only creates what is missing
    dumped = dump_config()
    assert dumped["parallel_execution"]["worker_pools"]["security"]["max_concurrent"] == 1
    assert dumped["parallel_execution"]["worker_pools"]["security"]["timeout_sec"] == 900
    assert dumped["billing"]["refund_policy"]["name"] == "by-count"
    assert dumped["billing"]["refund_policy"]["factor"] == 0.75
    assert "api_key" not in json.dumps(dumped).replace("api_key_env", "")

    # Round trip: the dump, loaded with --force into a changed database, restores what it held.
    path = tmp_path / "dumped.json"
    call_command("dump_config", output=str(path))
    WorkerPool.objects.filter(name="security").update(max_concurrent=4)
    RefundPolicy.objects.filter(name="by-count").update(factor=Decimal("0.5"))
    PricingPolicy.objects.filter(name="seed-default").update(fee_per_task=Decimal("2.00"))
    call_command("load_config", str(path), "--force")
    assert dump_config() == json.loads(path.read_text())
    assert ConfigChange.objects.filter(
        object_repr="security",
        field="max_concurrent",
        old_value="4",
        new_value="1",
        actor="load_config --force",
    ).exists()


def test_the_shipped_billing_section_matches_the_default_policies():
    load_config(shipped_config())
    assert dump_config()["billing"] == shipped_config()["billing"]
