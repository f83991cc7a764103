"""The admin as a staff user: every page loads, pool edits are audited, keys are issued once."""

import re
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from executions.models import (
    ApiKey,
    Attempt,
    Client,
    Conflict,
    Event,
    Execution,
    LedgerEntry,
    PricingPolicy,
    RefundPolicy,
    Task,
)
from executions.states import TaskStatus
from pools.models import ConfigChange, EngineSettings, ModelProfile, WorkerPool
from tests.conftest import configure

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(admin_client):
    return admin_client


@pytest.fixture
def populated(client_and_key):
    """One row of every model the admin shows."""
    configure()
    client, _ = client_and_key
    now = timezone.now()
    execution = Execution.objects.create(
        id="exec_admin",
        client=client,
        session_key="s",
        message="Build it",
        status="partial",
        mode="parallel",
        started_at=now,
        finished_at=now,
        fee_usd=Decimal("3.20"),
        next_seq=1,
    )
    task = Task.objects.create(
        execution=execution,
        key="task_1",
        pool="codegen",
        description="d",
        status=TaskStatus.DEAD,
        started_at=now,
    )
    attempt = Attempt.objects.create(
        task=task,
        number=1,
        status="failed",
        lease_expires_at=now,
        deadline_at=now,
        finished_at=now,
        error="boom",
    )
    Event.objects.create(execution=execution, seq=1, type="task.dead", task_key="task_1")
    Conflict.objects.create(
        execution=execution, kind="security_finding", between=["task_1"], description="CSRF"
    )
    LedgerEntry.objects.create(
        execution=execution,
        client=client,
        kind="usage",
        key=f"usage:{attempt.pk}:1",
        amount_usd=Decimal("0.001"),
        attempt=attempt,
    )
    LedgerEntry.objects.create(
        execution=execution, client=client, kind="fee", key=f"fee:{execution.pk}", amount_usd=Decimal("3.20")
    )
    WorkerPool.objects.filter(name="codegen").update(max_concurrent=3)
    ConfigChange.objects.create(
        actor="test",
        object_type="pools.workerpool",
        object_id="1",
        object_repr="codegen",
        field="max_concurrent",
        old_value="2",
        new_value="3",
    )
    return execution


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_registered_model_lists_and_opens(staff, populated, admin_user, rf):
    request = rf.get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        assert staff.get(admin_url(model, "changelist")).status_code == 200, model
        if model_admin.has_add_permission(request):
            assert staff.get(admin_url(model, "add")).status_code == 200, model
        obj = model._default_manager.first()
        if obj is not None:
            assert staff.get(admin_url(model, "change", obj.pk)).status_code == 200, model


def test_execution_page_shows_tasks_attempts_conflicts_events_and_ledger(staff, populated):
    page = staff.get(admin_url(Execution, "change", populated.pk)).content.decode()
    for text in ("task_1", "boom", "CSRF", "task.dead", "usage:", "fee $3.20"):
        assert text in page, text


def pool_form(pool: WorkerPool, **changes) -> dict:
    data = {
        "name": pool.name,
        "role": pool.role,
        "expected_output_tokens": pool.expected_output_tokens,
        "enabled": "on" if pool.enabled else "",
        "max_concurrent": pool.max_concurrent,
        "timeout_sec": pool.timeout_sec,
        "max_retries": pool.max_retries,
        "max_turns": pool.max_turns,
        "run_timeout_sec": pool.run_timeout_sec,
        "retry_backoff_sec": pool.retry_backoff_sec,
        "model": pool.model_id or "",
        "offline_latency_sec": pool.offline_latency_sec,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def test_saving_a_pool_records_who_changed_what(staff, populated, admin_user):
    pool = WorkerPool.objects.get(name="codegen")
    response = staff.post(
        admin_url(WorkerPool, "change", pool.pk), pool_form(pool, max_concurrent=5, timeout_sec=120)
    )
    assert response.status_code == 302
    assert WorkerPool.objects.get(pk=pool.pk).max_concurrent == 5
    changes = {
        c.field: c
        for c in ConfigChange.objects.filter(
            object_type="pools.workerpool", object_id=str(pool.pk), user=admin_user
        )
    }
    assert set(changes) == {"max_concurrent", "timeout_sec"}
    assert (changes["max_concurrent"].old_value, changes["max_concurrent"].new_value) == ("3", "5")
    assert changes["timeout_sec"].actor == admin_user.username
    trail = staff.get(admin_url(ConfigChange, "changelist")).content.decode()
    assert "max_concurrent" in trail


def test_pool_validation_rejects_bad_values(staff, populated):
    pool = WorkerPool.objects.get(name="codegen")
    for bad in ({"max_concurrent": 0}, {"timeout_sec": 0}, {"max_retries": 11}, {"offline_latency_sec": 600}):
        response = staff.post(admin_url(WorkerPool, "change", pool.pk), pool_form(pool, **bad))
        assert response.status_code == 200 and response.context["errors"], bad
    assert WorkerPool.objects.get(pk=pool.pk).max_concurrent == 3


def test_model_profile_takes_a_key_variable_name_never_a_key(staff, populated):
    response = staff.post(
        admin_url(ModelProfile, "add"),
        {
            "name": "minimax",
            "provider": "openai",
            "model": "MiniMax-M2.5",
            "base_url": "https://api.minimax.io/v1",
            "api_key_env": "sk-live-123",
            "max_output_tokens": 8192,
            "input_per_mtok": "0.3",
            "output_per_mtok": "1.2",
            "cache_read_per_mtok": "0",
            "cache_write_per_mtok": "0",
            "options": "{}",
        },
    )
    assert response.status_code == 200 and "api_key_env" in response.context["adminform"].form.errors
    assert not ModelProfile.objects.filter(name="minimax").exists()


def new_key_from(response) -> str:
    """The raw key from the message on the page the admin redirected to (which consumes it)."""
    keys = re.findall(r"New API key for [^:]+: (oc_\S+)", response.content.decode())
    assert len(keys) == 1
    return keys[0]


def test_client_creation_shows_its_key_once_and_stores_only_the_hash(staff):
    response = staff.post(
        admin_url(Client, "add"),
        {
            "name": "globex",
            "is_active": "on",
            "default_budget_usd": "5.00",
            "api_keys-TOTAL_FORMS": 0,
            "api_keys-INITIAL_FORMS": 0,
        },
        follow=True,
    )
    raw = new_key_from(response)
    key = ApiKey.objects.get(client__name="globex")
    assert key.key_hash == ApiKey.hash_key(raw) and raw not in (key.prefix, key.key_hash)
    assert raw not in staff.get(admin_url(ApiKey, "change", key.pk)).content.decode()
    assert staff.get("/api/pools", HTTP_X_API_KEY=raw).status_code == 200


def test_revoke_and_rotate_keys(staff, client_and_key):
    client, raw = client_and_key
    key = ApiKey.objects.get(client=client)
    response = staff.post(
        admin_url(ApiKey, "changelist"), {"action": "rotate", "_selected_action": [key.pk]}, follow=True
    )
    rotated = new_key_from(response)
    assert staff.get("/api/pools", HTTP_X_API_KEY=raw).status_code == 401
    assert staff.get("/api/pools", HTTP_X_API_KEY=rotated).status_code == 200
    new = ApiKey.objects.get(key_hash=ApiKey.hash_key(rotated))
    staff.post(admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": [new.pk]})
    assert staff.get("/api/pools", HTTP_X_API_KEY=rotated).status_code == 401
    response = staff.post(admin_url(ApiKey, "add"), {"client": client.pk}, follow=True)
    assert staff.get("/api/pools", HTTP_X_API_KEY=new_key_from(response)).status_code == 200


def test_activating_a_policy_retires_the_other_and_is_audited(staff):
    seed = RefundPolicy.objects.get(is_active=True)
    response = staff.post(
        admin_url(RefundPolicy, "add"),
        {
            "name": "by-count",
            "is_active": "on",
            "description": "",
            "share_rule": "count",
            "factor": "1",
            "floor_share": "0.1",
            "cap_share": "1",
            "on_partial": "undelivered",
            "on_budget_exceeded": "none",
            "on_failed": "full",
            "on_cancelled_before_start": "full",
            "on_cancelled_after_start": "none",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert RefundPolicy.current().name == "by-count"
    assert ConfigChange.objects.filter(
        object_repr__startswith=seed.name, field="is_active", new_value="False"
    ).exists()
    staff.post(admin_url(RefundPolicy, "changelist"), {"action": "activate", "_selected_action": [seed.pk]})
    assert RefundPolicy.current().pk == seed.pk
    assert "60.0% of the fee" in staff.get(admin_url(RefundPolicy, "changelist")).content.decode()
    pricing = staff.post(
        admin_url(PricingPolicy, "add"),
        {
            "name": "tokens",
            "is_active": "on",
            "description": "",
            "method": "tokens",
            "fee_per_task": "0",
            "markup": "2",
            "minimum_fee": "1.00",
        },
    )
    assert pricing.status_code == 302 and PricingPolicy.current().method == "tokens"


def test_admin_cancels_and_retries_executions(staff, populated):
    staff.post(admin_url(Execution, "changelist"), {"action": "retry", "_selected_action": [populated.pk]})
    populated.refresh_from_db()
    assert populated.status == "executing"
    assert Task.objects.get(execution=populated).status == TaskStatus.READY
    staff.post(admin_url(Execution, "changelist"), {"action": "cancel", "_selected_action": [populated.pk]})
    populated.refresh_from_db()
    assert populated.status == "cancelled"
    assert EngineSettings.objects.count() == 1
