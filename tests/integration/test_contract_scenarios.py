"""Parallel agents that agree: the plan's contract checked on the merged tree, and the integration
gate, end to end on real workers with the offline models' flaws."""

import io
import zipfile
from decimal import Decimal

import pytest
from django.test import Client as HttpClient

from executions.models import Conflict, Event, Task
from pools import sandbox
from tests.conftest import configure, wait_for_status

RESTAURANT = "Build a restaurant website with online booking and secure payments"
FINAL = {"completed", "partial", "failed"}

needs_sandbox = pytest.mark.skipif(not sandbox.availability()[0], reason="the gate needs bubblewrap")


def run_restaurant(client, flaws: list[str], max_rounds: int | None = None, **options):
    from executions.services import execution_create
    from pools.models import EngineSettings

    configure(latency=0.1, options={"flaws": flaws, **options})
    if max_rounds is not None:
        EngineSettings.objects.filter(pk=1).update(remediation_max_rounds=max_rounds)
    execution = execution_create(client=client, message=RESTAURANT, session_key="agree")
    return wait_for_status(execution.pk, FINAL, timeout=90)


def event_types(execution_id: str) -> list[str]:
    return list(
        Event.objects.filter(execution_id=execution_id, type__startswith="conflict.")
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_frontend_calling_an_endpoint_the_backend_does_not_serve_is_fixed_and_rechecked(
    workers, client_and_key
):
    client, key = client_and_key
    done = run_restaurant(client, ["interface_mismatch"])

    assert done.status == "completed", done.final_response
    [conflict] = Conflict.objects.filter(execution=done, kind="interface")
    assert conflict.between == ["task_1", "task_2"]  # the frontend deviates; the backend serves
    assert conflict.status == "resolved" and conflict.rounds == 1
    evidence = conflict.details["evidence"]
    assert {e["check"] for e in evidence} == {"call-undeclared"}
    first = evidence[0]
    assert first["file"] == "frontend/pages/bookings.tsx" and first["line"] == 14
    assert "GET /api/reservations" in first["found"] and "GET /api/bookings" in first["expected"]
    tasks = {t.key: t for t in Task.objects.filter(execution=done)}
    fix = tasks["task_1_iface1"]
    assert (fix.kind, fix.pool, fix.parent_id, fix.status) == (
        "remediation",
        "codegen",
        tasks["task_1"].pk,
        "succeeded",
    )
    assert fix.context["evidence"] == evidence[: len(fix.context["evidence"])]
    assert "/api/reservations" in fix.description
    assert event_types(done.pk) == ["conflict.detected", "conflict.resolving", "conflict.resolved"]
    # The re-check passes: every contract check of the merged tree.
    assert done.contract_report["checks"] > 20 and done.contract_report["failed"] == 0
    assert done.quality_score == 1.0
    if sandbox.availability()[0]:
        assert done.integration["ran"] and done.integration["ok"] and done.integration["passed"] == 15

    http = HttpClient(HTTP_X_API_KEY=key)
    detail = http.get(f"/api/execution/{done.pk}").json()
    assert [e["path"] for e in detail["contract"]["endpoints"]][:2] == [
        "/api/restaurants",
        "/api/restaurants",
    ]
    assert detail["contract"]["ownership"] == {
        "task_1": ["frontend"],
        "task_2": ["backend"],
        "task_3": ["database"],
    }
    [shown] = [c for c in detail["conflicts"] if c["kind"] == "interface"]
    assert shown["evidence"][0]["file"] == "frontend/pages/bookings.tsx"
    archive = http.get(f"/api/execution/{done.pk}/artifacts.zip")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as tree:
        page = tree.read("frontend/pages/bookings.tsx").decode()
    assert "/api/bookings" in page and "/api/reservations" not in page


def test_a_column_the_schema_lacks_is_the_schemas_to_fix(workers, client_and_key):
    client, _ = client_and_key
    done = run_restaurant(client, ["missing_column"])

    assert done.status == "completed", done.final_response
    [conflict] = Conflict.objects.filter(execution=done, kind="interface")
    # The schema deviates from the contract; the backend's SQL uses the column it lacks.
    assert conflict.between == ["task_3", "task_2"] and conflict.status == "resolved"
    [evidence] = conflict.details["evidence"]
    assert evidence["check"] == "column-missing" and evidence["file"] == "database/schema.sql"
    assert (
        "no party_size" in evidence["found"]
        and "bookings.party_size INTEGER NOT NULL" in evidence["expected"]
    )
    fix = Task.objects.get(execution=done, key="task_3_iface1")
    assert (fix.pool, fix.kind, fix.status) == ("database", "remediation", "succeeded")
    assert "party_size INTEGER NOT NULL" in fix.result["files"][0]["content"]
    assert done.contract_report["failed"] == 0


def test_a_task_writing_outside_its_owned_paths_moves_its_files(workers, client_and_key):
    client, key = client_and_key
    done = run_restaurant(client, ["ownership_violation"])

    assert done.status == "completed", done.final_response
    [conflict] = Conflict.objects.filter(execution=done, kind="ownership")
    assert conflict.between == ["task_1", "task_2"] and conflict.status == "resolved"
    [evidence] = conflict.details["evidence"]
    assert (
        evidence["file"] == "backend/app/cors.py" and evidence["found"] == "task_1 writes backend/app/cors.py"
    )
    assert evidence["expected"] == "task_1 writes only under frontend; backend/app/cors.py belongs to task_2"
    fix = Task.objects.get(execution=done, key="task_1_own1")
    assert fix.context["drop_paths"] == ["backend/app/cors.py"]
    assert fix.result["removed"] == ["backend/app/cors.py"]
    archive = HttpClient(HTTP_X_API_KEY=key).get(f"/api/execution/{done.pk}/artifacts.zip")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as tree:
        assert "backend/app/cors.py" not in tree.namelist()


@needs_sandbox
def test_a_backend_whose_tests_fail_at_the_gate_is_fixed_until_the_gate_passes(workers, client_and_key):
    client, key = client_and_key
    done = run_restaurant(client, ["failing_gate"])

    assert done.status == "completed", done.final_response
    [conflict] = Conflict.objects.filter(execution=done, kind="integration")
    assert conflict.between == ["task_2"] and conflict.status == "resolved" and conflict.rounds == 1
    failing = conflict.details["gate"]
    assert failing["exit_code"] == 1 and failing["failed"] == 1 and failing["passed"] == 14
    assert "FAILED tests/test_validation.py::test_one_is_a_valid_count" in failing["output_tail"]
    fix = Task.objects.get(execution=done, key="task_2_gate1")
    assert fix.context["gate"]["output_tail"] == failing["output_tail"]
    gate = done.integration
    assert gate["ran"] and gate["ok"] and (gate["passed"], gate["failed"]) == (15, 0)
    assert gate["command"] == (
        "python3 -m compileall -q -x '(^|/)(node_modules|\\.venv)/' . && cd backend && python3 -m pytest -q"
    )
    assert done.quality_score == 1.0 and done.refund_usd == 0
    assert "Integration gate passed" in done.final_response
    detail = HttpClient(HTTP_X_API_KEY=key).get(f"/api/execution/{done.pk}").json()
    assert detail["integration"]["ok"] is True and detail["integration"]["passed"] == 15
    [shown] = [c for c in detail["conflicts"] if c["kind"] == "integration"]
    assert shown["gate"]["failed"] == 1


@needs_sandbox
def test_a_gate_that_never_passes_ends_partial_with_the_refund(workers, client_and_key):
    client, _ = client_and_key
    done = run_restaurant(client, ["failing_gate"], max_rounds=1, remediation_fails=99)

    assert done.status == "partial"
    [conflict] = Conflict.objects.filter(execution=done, kind="integration")
    assert conflict.status == "unresolved" and conflict.rounds == 1
    assert "still failing after 1 fix round" in conflict.resolution
    assert done.integration["ran"] and not done.integration["ok"] and done.integration["failed"] == 1
    # The backend is not delivered: 90 % of its share of the fee comes back.
    tasks = {t.key: t for t in Task.objects.filter(execution=done, kind="plan")}
    share = Decimal(str(tasks["task_2"].weight)) / sum(Decimal(str(t.weight)) for t in tasks.values())
    assert done.refund_usd == (done.fee_usd * Decimal("0.9") * share).quantize(Decimal("0.01"))
    assert done.refund_usd > 0
    # 14 of 15 tests pass (the validation's 3, the API's 12), one unresolved conflict: (14/15) × 0.85.
    assert done.quality_score == 0.79
    assert "Integration gate failed" in done.final_response
