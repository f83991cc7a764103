"""Seed failure scenarios 2 and 3 end to end on real workers, with real tool findings."""

import io
import zipfile
from decimal import Decimal

from django.test import Client as HttpClient

from executions.models import Attempt, Conflict, Event, Task
from tests.conftest import configure, wait_for_status

RESTAURANT = "Build a restaurant website with online booking and secure payments"


def event_types(execution_id: str, prefix: str) -> list[str]:
    return list(
        Event.objects.filter(execution_id=execution_id, type__startswith=prefix)
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_security_flags_sql_injection_then_remediation_and_reaudit_resolve_it(workers, client_and_key):
    from executions.services import execution_create

    configure(latency=0.15, options={"flaws": ["sql_injection"]})
    client, key = client_and_key
    execution = execution_create(client=client, message=RESTAURANT, session_key="user123")
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=40)

    assert done.status == "completed"
    tasks = {t.key: t for t in Task.objects.filter(execution=done)}
    backend, audit = tasks["task_2"], tasks["task_4"]
    # The audit's findings rest on a real tool: bandit's B608 on the injectable query,
    # joined with the model's.
    sources = {
        (f["source"], f.get("rule", ""))
        for f in audit.result["findings"]
        if f.get("file") == "backend/app/main.py"
    }
    assert ("bandit", "B608") in sources and ("model", "") in sources
    [conflict] = Conflict.objects.filter(execution=done, kind="security_finding")
    assert conflict.status == "resolved" and conflict.between == ["task_4", "task_2"] and conflict.rounds == 1
    assert "SQL injection" in conflict.description
    fix, reaudit = tasks["task_2_fix1"], tasks["task_2_reaudit1"]
    assert (fix.kind, fix.pool, fix.parent_id, fix.status) == (
        "remediation",
        "codegen",
        backend.pk,
        "succeeded",
    )
    assert (reaudit.kind, reaudit.pool, reaudit.blocked_by) == ("reaudit", "security", ["task_2_fix1"])
    assert fix.context["target_files"][0]["path"] == "backend/app/main.py"
    assert "% q" in fix.context["target_files"][0]["content"]
    assert reaudit.started_at >= fix.finished_at
    # The re-audit read the remediated code and found nothing critical or high; bandit agrees.
    assert not [f for f in reaudit.result["findings"] if f["severity"] in ("critical", "high")]
    assert reaudit.result["verification"]["bandit"]["scanned"] == [
        "backend/app/main.py",
        "backend/app/__init__.py",
        "backend/app/db.py",
        "backend/app/validation.py",
        "backend/tests/test_validation.py",
        "backend/tests/test_api.py",
    ]
    assert all(f.get("resolved") for f in audit.result["findings"] if f["severity"] in ("critical", "high"))
    # The extra work is visible: attempts, tokens and cost of the follow-ups are in the execution's totals.
    assert Attempt.objects.filter(task__execution=done).count() == 6
    assert fix.tokens_out > 0 and reaudit.tokens_out > 0 and fix.cost_usd > 0
    assert done.cost_usd >= sum(t.cost_usd for t in tasks.values())
    assert event_types(done.pk, "conflict.") == [
        "conflict.detected",
        "conflict.resolving",
        "conflict.resolved",
    ]
    assert done.quality_score == 1.0
    assert "Remediation:" in done.final_response and "task_2_fix1" in done.final_response
    assert "SQL injection" in done.final_response

    http = HttpClient(HTTP_X_API_KEY=key)
    detail = http.get(f"/api/execution/{done.pk}").json()
    assert detail["conflicts"][0]["status"] == "resolved" and detail["conflicts"][0]["rounds"] == 1
    assert {t["id"]: t["verification"]["passed"] for t in detail["tasks"]}["task_2_reaudit1"] is True
    archive = http.get(f"/api/execution/{done.pk}/artifacts.zip")
    assert archive.status_code == 200 and archive["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as tree:
        names = set(tree.namelist())
        main = tree.read("backend/app/main.py").decode()
    assert {
        "backend/app/main.py",
        "backend/requirements.txt",
        "database/schema.sql",
        "frontend/package.json",
    } <= names
    assert "LIKE ? ESCAPE '!'" in main and "(anywhere(q), PAGE)" in main and "% q" not in main


def test_rejected_schema_is_revised_and_dependents_use_the_revision(workers, client_and_key):
    from executions.services import execution_create

    # One codegen slot and a slow frontend: the backend starts after the revision is done, and
    # reads the schema as a soft dependency; the integration waits for it as a hard one.
    configure(
        latency=0.15,
        codegen=1,
        max_turns=16,
        options={
            "flaws": ["missing_fk_index"],
            "latency_rules": [
                {"match": "Next.js frontend", "latency_sec": 0.8},
                {"match": "FastAPI backend", "latency_sec": 0.1},
            ],
        },
    )
    client, key = client_and_key
    execution = execution_create(
        client=client, message="Build an online store with checkout and secure payments", session_key="shop"
    )
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=40)

    assert done.status == "completed"
    tasks = {t.key: t for t in Task.objects.filter(execution=done)}
    schema, revision = tasks["task_3"], tasks["task_3_rev1"]
    assert schema.result["verification"]["schema_accepted"] is False
    rejected = [f for f in schema.result["findings"] if f.get("rule") == "fk-without-index"]
    assert rejected and all(f["source"] == "schema" and f["resolved"] for f in rejected)
    [conflict] = Conflict.objects.filter(execution=done, kind="schema_rejected")
    assert conflict.status == "resolved" and conflict.rounds == 1
    assert conflict.between == ["task_3", "task_2", "task_5"]
    assert (revision.kind, revision.pool, revision.parent_id) == ("revision", "database", schema.pk)
    assert revision.result["verification"]["schema_accepted"] is True
    assert "no index" in revision.context["findings"][0]["title"]
    # The hard dependent waited for the revision; both dependents read the revised schema.
    integration, backend = tasks["task_5"], tasks["task_2"]
    assert integration.blocked_by == ["task_2", "task_3", "task_3_rev1"]
    assert integration.started_at >= revision.finished_at
    for dependent in (integration, backend):
        assert {"key": "task_3", "source": "task_3_rev1"}.items() <= next(
            i for i in dependent.result["inputs"] if i["key"] == "task_3"
        ).items()
    assert event_types(done.pk, "conflict.") == [
        "conflict.detected",
        "conflict.resolving",
        "conflict.resolved",
    ]
    assert done.quality_score == 1.0
    # The integration's checkout flow ran end to end, in its loop and in the gate, on the revision.
    assert integration.result["tests"] == {"passed": 4, "failed": 0}
    assert done.integration["command"].endswith("cd src && python3 -m pytest -q")
    assert (done.integration["ok"], done.integration["passed"], done.integration["failed"]) == (True, 26, 0)

    archive = HttpClient(HTTP_X_API_KEY=key).get(f"/api/execution/{done.pk}/artifacts.zip")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as tree:
        sql = tree.read("database/schema.sql").decode()
        assert "def checkout(client, records" in tree.read("src/task_5/checkout_flow.py").decode()
    assert sql == revision.result["files"][0]["content"] and "CREATE INDEX" in sql


def test_broken_output_is_retried_and_a_stubborn_flaw_ends_unresolved(workers, client_and_key):
    from executions.services import execution_create
    from pools.models import EngineSettings

    configure(
        latency=0.1,
        options={
            "flaws": ["sql_injection"],
            "remediation_fails": 1,
            "fail_rules": [{"match": "FastAPI backend", "attempts": [1], "error": "broken_code"}],
        },
    )
    EngineSettings.objects.filter(pk=1).update(remediation_max_rounds=1)
    client, _ = client_and_key
    execution = execution_create(
        client=client, message="Build a FastAPI backend with API endpoints", session_key="api"
    )
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=40)

    attempts = list(Attempt.objects.filter(task__execution=done, task__key="task_1").order_by("number"))
    # A worker lost under load (its lease lapsed) adds a `lost` attempt that counts for nothing.
    first, second = [a for a in attempts if a.status != "lost"]
    assert first.status == "failed" and second.status == "succeeded"
    assert first.error.startswith("verification failed: src/draft.py:1: Python syntax error")
    assert first.tokens_out > 0  # a broken output still costs its tokens
    # No audit was planned: bandit's own finding on the backend raised the conflict.
    [conflict] = Conflict.objects.filter(execution=done)
    assert conflict.kind == "security_finding" and conflict.between == ["task_1"]
    assert conflict.description.startswith("bandit vs CodeGen on Possible SQL injection")
    assert conflict.status == "unresolved" and conflict.rounds == 1
    assert "still open after 1 remediation round" in conflict.resolution
    assert set(Task.objects.filter(execution=done).values_list("key", flat=True)) == {
        "task_1",
        "task_1_fix1",
        "task_1_reaudit1",
    }
    assert event_types(done.pk, "conflict.") == [
        "conflict.detected",
        "conflict.resolving",
        "conflict.unresolved",
    ]
    # An unresolved conflict never ends `completed`: the flagged code is not delivered and its share
    # is refunded (90 % of the one task's). One open high finding (one place, however many tools
    # report it) and one unresolved conflict: 1 × (1 − 0.1) × 0.85 = 0.765, half up.
    assert done.status == "partial" and done.quality_score == 0.77
    assert done.refund_usd == (done.fee_usd * Decimal("0.9")).quantize(Decimal("0.01"))
    assert "Needs manual review" in done.final_response and "SQL injection" in done.final_response
