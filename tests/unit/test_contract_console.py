"""The contract, its checks, each interface conflict's evidence and the gate's output, as the
console page and Slack show them."""

import pytest

from bots import render
from executions.models import Conflict
from tests.unit.test_console_pages import make_execution, staff  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

CONTRACT = {
    "endpoints": [{"method": "GET", "path": "/api/bookings", "request": {}, "response": {"items": "array"}}],
    "tables": [{"name": "bookings", "columns": {"id": "SERIAL PRIMARY KEY"}}],
    "ownership": {"task_1": ["frontend"], "task_2": ["backend"]},
}
GATE = {
    "ran": True,
    "ok": False,
    "command": "cd backend && python3 -m pytest -q",
    "exit_code": 1,
    "passed": 2,
    "failed": 1,
    "output_tail": "FAILED tests/test_validation.py::test_one_is_a_valid_count",
    "reason": "the gate failed",
    "duration_sec": 1.2,
}
EVIDENCE = {
    "kind": "interface",
    "check": "call-undeclared",
    "file": "frontend/pages/bookings.tsx",
    "line": 8,
    "found": "calls GET /api/reservations",
    "expected": "a declared endpoint, e.g. GET /api/bookings",
    "deviating": "task_1",
    "concerned": ["task_2"],
}


def test_the_snapshot_carries_the_contract_the_checks_the_evidence_and_the_gate(staff):  # noqa: F811
    execution = make_execution(
        status="partial",
        contract=CONTRACT,
        contract_report={
            "checks": 12,
            "passed": 11,
            "failed": 1,
            "counts": {"routes": 4},
            "mismatches": [EVIDENCE],
        },
        integration=GATE,
    )
    Conflict.objects.create(
        execution=execution,
        kind="interface",
        between=["task_1", "task_2"],
        description="Interface: task_1 vs task_2 vs the contract",
        status="resolved",
        details={"evidence": [EVIDENCE], "deviating": ["task_1"]},
    )
    Conflict.objects.create(
        execution=execution,
        kind="integration",
        between=["task_2"],
        description="Integration gate fails",
        status="unresolved",
        details={"gate": {k: GATE[k] for k in ("command", "exit_code", "passed", "failed", "output_tail")}},
    )
    snapshot = staff.get(f"/console/executions/{execution.pk}.json").json()
    assert snapshot["contract"] == CONTRACT
    assert snapshot["contract_checks"] == {"checks": 12, "passed": 11, "failed": 1, "counts": {"routes": 4}}
    assert snapshot["integration"]["output_tail"] == GATE["output_tail"]
    interface, gate = snapshot["conflicts"]
    assert interface["evidence"] == [{k: EVIDENCE[k] for k in ("check", "file", "line", "found", "expected")}]
    assert gate["gate"]["failed"] == 1 and gate["evidence"] == []
    page = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert 'id="tab-contract"' in page and 'id="panel-contract"' in page


def test_slack_final_message_states_the_gate(staff):  # noqa: F811
    execution = make_execution(status="partial", integration=GATE, finished_at=None)
    text = render.gate_line(execution)
    assert (
        text == "Integration gate failed: `cd backend && python3 -m pytest -q` exited 1 (2 passed, 1 failed)"
    )
    assert (
        f"*Integration:* {render.escape(text)}"
        in render.summary_message(execution, public_url="http://x").text
    )
    execution.integration = {"ran": False, "reason": "the sandbox is unavailable: no bwrap", "ok": True}
    assert render.gate_line(execution) == (
        "Integration gate not run: the sandbox is unavailable: no bwrap; the merged project is not verified"
    )
