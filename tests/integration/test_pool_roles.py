"""Pools are data: renamed in the admin while the workers run, the seed scenarios still work,
because verification, audits and remediation follow a pool's role, never its name."""

from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.urls import reverse

from executions.models import Conflict, Task
from pools.models import WorkerPool
from tests.conftest import configure, wait_for_status

RESTAURANT = "Build a restaurant website with online booking and secure payments"
RENAMES = {"codegen": "builders", "security": "auditors", "database": "schema-smiths"}


def rename_in_the_admin(staff: HttpClient, old: str, new: str) -> None:
    pool = WorkerPool.objects.get(name=old)
    form = {
        "name": new,
        "role": pool.role,
        "expected_output_tokens": pool.expected_output_tokens,
        "enabled": "on",
        "max_concurrent": pool.max_concurrent,
        "timeout_sec": pool.timeout_sec,
        "max_retries": pool.max_retries,
        "max_turns": pool.max_turns,
        "run_timeout_sec": pool.run_timeout_sec,
        "retry_backoff_sec": pool.retry_backoff_sec,
        "model": pool.model_id,
        "offline_latency_sec": pool.offline_latency_sec,
    }
    response = staff.post(reverse("admin:pools_workerpool_change", args=[pool.pk]), form)
    assert response.status_code == 302, response.content[:2000]
    assert WorkerPool.objects.get(pk=pool.pk).name == new


def test_renamed_pools_still_audit_remediate_and_revise(workers, client_and_key):
    from executions.services import execution_create

    configure(latency=0.15, options={"flaws": ["sql_injection", "missing_fk_index"]})
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123-long")
    staff = HttpClient()
    staff.force_login(admin)
    for old, new in RENAMES.items():
        rename_in_the_admin(staff, old, new)
    assert set(WorkerPool.objects.values_list("name", flat=True)) == set(RENAMES.values())

    client, _ = client_and_key
    execution = execution_create(client=client, message=RESTAURANT, session_key="renamed")
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=60)

    assert done.status == "completed", done.error
    tasks = list(Task.objects.filter(execution=done))
    assert {t.pool for t in tasks} <= set(RENAMES.values())
    assert {t.role for t in tasks if t.kind == "plan"} == {"codegen", "security", "database"}
    # Scenario 2: the audit's SQL-injection finding → a fix in the code's pool, a re-audit in the
    # auditor's pool; scenario 3: the schema without FK indexes → a revision in the schema's pool.
    security = Conflict.objects.get(execution=done, kind="security_finding")
    schema = Conflict.objects.get(execution=done, kind="schema_rejected")
    assert security.status == "resolved" and schema.status == "resolved"
    by_kind = {t.kind: t for t in tasks if t.kind != "plan"}
    assert by_kind["remediation"].pool == "builders" and by_kind["reaudit"].pool == "auditors"
    assert by_kind["revision"].pool == "schema-smiths"
    assert by_kind["revision"].result["verification"]["schema_accepted"] is True
