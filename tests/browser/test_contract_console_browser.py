"""The Contract & gate tab and the conflicts' evidence, in real headless Chromium."""

from tests.browser.test_console_browser import (  # noqa: F401 (fixtures)
    chromium,
    log_in,
    page,
    pytestmark,
    server,
    shot,
    staff_user,
)
from tests.unit.test_contract_console import CONTRACT, EVIDENCE, GATE


def test_the_contract_its_checks_the_evidence_and_the_gate_output_are_shown(page, server, staff_user):  # noqa: F811
    from executions.models import Client, Conflict, Execution

    client = Client.objects.create(name="acme")
    execution = Execution.objects.create(
        id="exec_contract_1",
        client=client,
        session_key="s",
        message="Build a restaurant website with online booking",
        status="partial",
        contract=CONTRACT,
        contract_report={
            "checks": 12,
            "passed": 11,
            "failed": 1,
            "counts": {"routes": 4},
            "notes": ["1 mismatch(es) in the project's files as they were before this execution"],
        },
        integration=GATE,
    )
    Conflict.objects.create(
        execution=execution,
        kind="interface",
        between=["task_1", "task_2"],
        description="Interface: task_1 vs task_2 vs the contract",
        status="resolved",
        details={"evidence": [EVIDENCE]},
    )
    log_in(page)
    page.goto(f"/console/executions/{execution.pk}/#contract")
    page.wait_for_selector("#panel-contract:not([hidden]) [data-contract=endpoints]")
    assert page.locator("[data-contract=endpoints] tbody tr").count() == 1
    assert "/api/bookings" in page.inner_text("[data-contract=endpoints]")
    assert page.locator("[data-contract=ownership] tbody tr").count() == 2
    assert "11 of 12 checks pass" in page.inner_text("[data-contract-checks]")
    assert "as they were before this execution" in page.inner_text("[data-contract-notes]")
    assert page.locator("[data-gate=failed]").count() == 1
    assert "FAILED tests/test_validation.py" in page.inner_text("[data-gate=failed] pre")
    shot(page, "execution-contract")
    page.click("#tab-conflicts")
    evidence = page.inner_text("[data-evidence=interface]")
    assert "frontend/pages/bookings.tsx:8" in evidence and "calls GET /api/reservations" in evidence
    shot(page, "execution-conflict-evidence")
    assert page.js_errors == []


def test_a_site_of_pages_alone_has_nothing_to_check_and_says_so(page, server, staff_user):  # noqa: F811
    from executions.models import Client, Execution

    execution = Execution.objects.create(
        id="exec_contract_2",
        client=Client.objects.create(name="acme"),
        session_key="s",
        message="Build a landing page for a coffee shop",
        status="completed",
        contract={"endpoints": [], "tables": [], "ownership": {}},
        contract_report={"checks": 0, "passed": 0, "failed": 0, "counts": {}, "mismatches": [], "notes": []},
        integration=GATE,
    )
    log_in(page)
    page.goto(f"/console/executions/{execution.pk}/#contract")
    page.wait_for_selector("#panel-contract:not([hidden]) [data-contract-checks]")
    assert page.inner_text("[data-contract-checks]") == (
        "Nothing to check: the contract declares no endpoints or tables."
    )
    assert "No endpoints declared." in page.inner_text("#contract")
    assert page.js_errors == []
