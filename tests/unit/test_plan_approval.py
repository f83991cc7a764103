"""Plan approval: with `approval: plan` an execution waits after planning with its plan, estimates
and quoted fee, no task and no fee; approving (as quoted or edited) charges the fee and starts
exactly the approved tasks; rejecting or letting it expire cancels it with no fee, the planning
usage staying on the ledger; acting on one that is not awaiting approval is a 409 with the reason."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from executions import selectors
from executions.api_schemas import ExecuteOut
from executions.models import Event, Execution, LedgerEntry, Task
from executions.planning import execution_plan, serialize_plan
from executions.reaper import reap
from executions.services import execution_cancel, execution_create
from pools import llm
from tests.conftest import configure
from tests.factories import make_client

REQUEST = "Build a restaurant website with online booking and secure payments"
PLAN = {
    "tasks": [
        {"id": "api", "pool": "codegen", "description": "Build the booking API"},
        {"id": "schema", "pool": "database", "description": "Design the bookings schema"},
        {"id": "audit", "pool": "security", "description": "Audit the booking API", "blocked_by": ["api"]},
    ]
}


@pytest.fixture
def pm_plan(monkeypatch):
    """The PM answers with PLAN; every model call is recorded by purpose."""
    purposes: list[str] = []
    real = llm.complete

    def complete(spec, request, on_progress=None):
        purposes.append(request.purpose)
        if request.purpose == "plan":
            return llm.Completion(text=json.dumps(PLAN), input_tokens=1000, output_tokens=400)
        return real(spec, request, on_progress)

    monkeypatch.setattr(llm, "complete", complete)
    return purposes


@pytest.fixture
def acme(db):
    configure(latency=0.5)  # estimates only: no pool runs here
    return make_client("acme")


def awaiting(client, **fields) -> Execution:
    execution = execution_create(
        client=client, message=REQUEST, session_key="approval", mode="parallel", **fields
    )
    assert execution_plan(execution.pk) is True
    execution.refresh_from_db()
    return execution


def api(http, method: str, path: str, key: str, body=None):
    call = getattr(http, method)
    if method == "get":
        return call(path, HTTP_X_API_KEY=key)
    data = "" if body is None else json.dumps(body)  # an empty POST, as `curl -X POST` sends
    return call(path, data=data, content_type="application/json", HTTP_X_API_KEY=key)


def fee_entries(execution: Execution) -> list[Decimal]:
    return list(
        LedgerEntry.objects.filter(execution=execution, kind="fee").values_list("amount_usd", flat=True)
    )


def test_a_planned_execution_waits_with_its_plan_and_quote_and_no_task_no_fee(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")

    assert execution.status == "awaiting_approval"
    assert not Task.objects.filter(execution=execution).exists()  # nothing a dispatch could find
    assert reap()["dispatched"] == 0
    assert execution.fee_usd == 0 and fee_entries(execution) == []
    assert LedgerEntry.objects.filter(execution=execution, key__startswith="usage:plan:").count() == 1
    assert pm_plan == ["plan"]  # the PM only: no pool was called
    body = api(client, "get", f"/api/execution/{execution.pk}", key).json()
    assert body["status"] == "awaiting_approval" and body["approval"] == "plan"
    assert body["fee_usd"] == "0.00" and body["quoted_fee_usd"] == "2.40"  # 3 tasks at $0.80
    assert body["estimated_duration_sec"] > 0 and Decimal(body["estimated_cost_usd"]) > 0
    assert [t["id"] for t in body["plan"]["tasks"]] == ["api", "schema", "audit"]
    assert body["plan"]["tasks"][2]["blocked_by"] == ["api"] and body["tasks"] == []
    assert body["approval_expires_at"] is not None
    event = Event.objects.get(execution=execution, type="execution.awaiting_approval")
    assert event.payload["fee_usd"] == "2.40" and len(event.payload["tasks"]) == 3
    # The start request's answer (after ?wait=) shows the quote and the tasks the approval would start.
    brief = ExecuteOut(**selectors.execution_brief(execution.pk)).dict()
    assert brief["parallel_tasks"] == 3 and brief["quoted_fee_usd"] == "2.40" and brief["fee_usd"] == "0.00"
    assert [(t["id"], t["status"], t["blocked_by"]) for t in brief["tasks"]] == [
        ("api", "awaiting_approval", []),
        ("schema", "awaiting_approval", []),
        ("audit", "awaiting_approval", ["api"]),
    ]


def test_approving_charges_the_quoted_fee_and_starts_the_plan(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")

    response = api(client, "post", f"/api/execution/{execution.pk}/approve", key)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "executing"
    execution.refresh_from_db()
    assert execution.fee_usd == Decimal("2.40") and fee_entries(execution) == [Decimal("2.40")]
    assert execution.started_at is not None and execution.approval_expires_at is None
    tasks = {t.key: t for t in Task.objects.filter(execution=execution)}
    assert set(tasks) == {"api", "schema", "audit"}
    assert tasks["audit"].status == "pending" and tasks["api"].status == "ready"
    types = list(Event.objects.filter(execution=execution).values_list("type", flat=True))
    assert types[-2:] == ["execution.approved", "execution.planned"]

    again = api(client, "post", f"/api/execution/{execution.pk}/approve", key)
    assert again.status_code == 409
    assert "is executing" in again.json()["detail"] and "awaiting approval" in again.json()["detail"]
    assert fee_entries(execution) == [Decimal("2.40")]


def test_a_plan_approved_after_the_pricing_changed_is_charged_as_quoted_and_says_by_which_policy(
    acme, pm_plan, client
):
    from executions.models import PricingPolicy

    owner, key = acme
    execution = awaiting(owner, approval="plan")
    quoted_by = PricingPolicy.current().name
    PricingPolicy.objects.create(
        name="dearer", is_active=True, fee_per_task=Decimal("9.00"), minimum_fee=Decimal("0")
    )

    assert api(client, "post", f"/api/execution/{execution.pk}/approve", key).status_code == 200
    [fee] = LedgerEntry.objects.filter(execution=execution, kind="fee")
    assert fee.amount_usd == Decimal("2.40")
    assert fee.description.startswith(f"project fee ({quoted_by}:") and "dearer" not in fee.description


def test_an_edited_plan_runs_exactly_the_edited_tasks_at_the_edited_plans_fee(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")
    plan = api(client, "get", f"/api/execution/{execution.pk}", key).json()["plan"]["tasks"]
    edited = [t for t in plan if t["id"] != "schema"]  # one task removed
    edited[0]["description"] = "Build the booking API with FastAPI and rate limits"
    edited[1]["blocked_by"] = []  # the audit no longer waits

    response = api(client, "post", f"/api/execution/{execution.pk}/approve", key, {"tasks": edited})

    assert response.status_code == 200, response.content
    tasks = {t.key: t for t in Task.objects.filter(execution=execution)}
    assert set(tasks) == {"api", "audit"}
    assert tasks["api"].description == "Build the booking API with FastAPI and rate limits"
    assert tasks["audit"].blocked_by == [] and tasks["audit"].status == "ready"
    execution.refresh_from_db()
    assert fee_entries(execution) == [Decimal("1.60")] and execution.fee_usd == Decimal("1.60")
    assert [t["id"] for t in execution.plan["tasks"]] == [
        t.key for t in Task.objects.filter(execution=execution)
    ]
    approved = Event.objects.get(execution=execution, type="execution.approved")
    assert approved.payload["edited"] is True and approved.payload["tasks"] == 2


@pytest.mark.parametrize(
    "tasks,needle",
    [
        (
            [{"id": "audit", "pool": "security", "description": "Audit", "blocked_by": ["api"]}],
            "unknown task api",
        ),
        ([], "no tasks"),
        ([{"id": "a", "pool": "codegen", "description": "x", "blocked_by": ["a"]}], "depends on itself"),
        ("not a list", "tasks"),
        (
            [{"id": "a", "pool": "codegen", "description": "x", "context": {"note\x00": "y"}}],
            "NUL character",
        ),
    ],
)
def test_an_invalid_edited_plan_is_a_422_and_changes_nothing(acme, pm_plan, client, tasks, needle):
    owner, key = acme
    execution = awaiting(owner, approval="plan")

    response = api(client, "post", f"/api/execution/{execution.pk}/approve", key, {"tasks": tasks})

    assert response.status_code == 422 and needle in response.json()["detail"]
    execution.refresh_from_db()
    assert execution.status == "awaiting_approval" and fee_entries(execution) == []
    assert not Task.objects.filter(execution=execution).exists()


def test_a_misspelt_edit_is_refused_not_approved_as_quoted(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")

    edited = [{"id": "task_1", "pool": "codegen", "description": "Only the backend"}]
    response = api(client, "post", f"/api/execution/{execution.pk}/approve", key, {"task": edited})

    assert response.status_code == 422 and "task: not a field" in response.json()["detail"]
    execution.refresh_from_db()
    assert execution.status == "awaiting_approval" and fee_entries(execution) == []


def test_rejecting_cancels_with_no_fee_and_keeps_the_planning_usage(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")
    planning_usage = execution.cost_usd

    response = api(client, "post", f"/api/execution/{execution.pk}/reject", key)

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    execution.refresh_from_db()
    assert execution.status == "cancelled" and execution.fee_usd == 0 and execution.refund_usd == 0
    assert fee_entries(execution) == [] and not LedgerEntry.objects.filter(execution=execution, kind="refund")
    assert execution.cost_usd == planning_usage > 0
    assert LedgerEntry.objects.filter(execution=execution, key__startswith="usage:plan:").count() == 1
    assert "rejected" in execution.final_response
    approve = api(client, "post", f"/api/execution/{execution.pk}/approve", key)
    assert approve.status_code == 409 and "is cancelled" in approve.json()["detail"]
    assert api(client, "post", f"/api/execution/{execution.pk}/reject", key).status_code == 409


def test_another_clients_execution_is_a_404_to_approve_or_reject(acme, pm_plan, client):
    owner, _ = acme
    _, other_key = make_client("globex")
    execution = awaiting(owner, approval="plan")

    for action in ("approve", "reject"):
        response = api(client, "post", f"/api/execution/{execution.pk}/{action}", other_key)
        assert response.status_code == 404 and response.json()["detail"] == "execution not found"
    assert Execution.objects.get(pk=execution.pk).status == "awaiting_approval"


def test_the_reaper_cancels_an_approval_past_its_time_with_no_fee(acme, pm_plan, client, settings):
    owner, key = acme
    execution = awaiting(owner, approval="plan")
    ttl = execution.approval_expires_at - execution.created_at
    assert timedelta(hours=71.9) < ttl <= timedelta(hours=72.1)  # OPENCLAW_APPROVAL_TTL_HOURS

    assert reap()["approvals_expired"] == 0  # not yet
    stats = reap(now=execution.approval_expires_at + timedelta(seconds=1))

    assert stats["approvals_expired"] == 1
    execution.refresh_from_db()
    assert execution.status == "cancelled" and execution.fee_usd == 0 and fee_entries(execution) == []
    assert "not approved in time" in execution.final_response
    assert api(client, "post", f"/api/execution/{execution.pk}/approve", key).status_code == 409


def test_an_approval_that_expired_before_the_reaper_noticed_is_refused(acme, pm_plan, client):
    owner, key = acme
    execution = awaiting(owner, approval="plan")
    Execution.objects.filter(pk=execution.pk).update(
        approval_expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = api(client, "post", f"/api/execution/{execution.pk}/approve", key)

    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert Execution.objects.get(pk=execution.pk).status == "cancelled"


def test_the_clients_default_applies_when_the_request_does_not_say(acme, pm_plan, client):
    owner, key = acme
    owner.default_approval = "plan"
    owner.save()

    response = api(client, "post", "/api/execute-parallel", key, {"message": REQUEST})
    assert response.status_code == 202 and response.json()["approval"] == "plan"
    assert execution_plan(response.json()["execution_id"]) is True
    assert Execution.objects.get(pk=response.json()["execution_id"]).status == "awaiting_approval"

    explicit = api(client, "post", "/api/execute-parallel", key, {"message": REQUEST, "approval": "auto"})
    assert execution_plan(explicit.json()["execution_id"]) is True
    assert Execution.objects.get(pk=explicit.json()["execution_id"]).status == "executing"
    bad = api(client, "post", "/api/execute-parallel", key, {"message": REQUEST, "approval": "later"})
    assert bad.status_code == 422 and "approval" in bad.json()["detail"]


def test_an_execution_awaiting_approval_can_be_cancelled_like_any_live_one(acme, pm_plan):
    owner, _ = acme
    execution = awaiting(owner, approval="plan")

    assert execution_cancel(execution, by="client") is True
    execution.refresh_from_db()
    assert execution.status == "cancelled" and fee_entries(execution) == []


def test_serial_order_keeps_dependencies_even_against_priorities():
    tasks = [
        {"id": "a", "priority": 5, "blocked_by": [], "soft_deps": []},
        {"id": "b", "priority": 1, "blocked_by": ["a"], "soft_deps": []},
        {"id": "c", "priority": 1, "blocked_by": [], "soft_deps": ["b"]},
        {"id": "d", "priority": 2, "blocked_by": [], "soft_deps": []},
    ]
    chained = serialize_plan(tasks, lambda t: (t["priority"],))
    order = [t["id"] for t in chained]
    assert order == ["d", "a", "b", "c"]  # a before b and b before c, whatever their priorities
    assert [t["blocked_by"] for t in chained] == [[], ["d"], ["a"], ["b"]]


# ---------------------------------------------------------------- the console


def staff_browser(username: str, *permissions: str):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client as Browser

    user = get_user_model().objects.create_user(username, password="pw-12345678", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="executions", codename__in=permissions)
    )
    browser = Browser()
    browser.force_login(user)
    return browser


def test_the_console_shows_the_plan_and_approves_it_as_edited(acme, pm_plan):
    owner, _ = acme
    execution = awaiting(owner, approval="plan")
    staff = staff_browser("ops", "change_execution")

    page = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert 'id="approval-panel"' in page and "$2.40" in page and 'name="description:schema"' in page
    response = staff.post(
        f"/console/executions/{execution.pk}/approve",
        {
            "keep": ["api", "audit"],
            "pool:api": "codegen",
            "description:api": "Build the booking API in FastAPI",
            "blocked_by:api": "",
            "pool:audit": "security",
            "description:audit": "Audit the booking API",
            "blocked_by:audit": "api",
        },
    )

    assert response.status_code == 302
    tasks = {t.key: t for t in Task.objects.filter(execution=execution)}
    assert set(tasks) == {"api", "audit"} and tasks["api"].description == "Build the booking API in FastAPI"
    assert tasks["audit"].blocked_by == ["api"]
    assert fee_entries(execution) == [Decimal("1.60")]
    approved = Event.objects.get(execution=execution, type="execution.approved")
    assert approved.payload["by"] == "staff (ops)" and approved.payload["edited"] is True
    page = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert 'id="approval-panel"' not in page


def test_the_console_approves_an_untouched_plan_at_its_quoted_fee_and_rejects(acme, pm_plan):
    owner, _ = acme
    staff = staff_browser("ops", "change_execution")
    quoted = awaiting(owner, approval="plan")
    form = {"keep": ["api", "schema", "audit"]}
    for task in PLAN["tasks"]:
        form[f"pool:{task['id']}"] = task["pool"]
        form[f"description:{task['id']}"] = task["description"]
        form[f"blocked_by:{task['id']}"] = ", ".join(task.get("blocked_by", []))

    staff.post(f"/console/executions/{quoted.pk}/approve", form)
    assert Event.objects.get(execution=quoted, type="execution.approved").payload["edited"] is False
    assert fee_entries(quoted) == [Decimal("2.40")]

    rejected = awaiting(owner, approval="plan")
    staff.post(f"/console/executions/{rejected.pk}/reject")
    assert Execution.objects.get(pk=rejected.pk).status == "cancelled" and fee_entries(rejected) == []
    again = staff.post(f"/console/executions/{rejected.pk}/approve", form, follow=True)
    assert "Not approved: execution is cancelled" in again.content.decode()


def test_staff_without_the_change_permission_see_the_plan_but_no_buttons(acme, pm_plan):
    owner, _ = acme
    execution = awaiting(owner, approval="plan")
    viewer = staff_browser("viewer")

    page = viewer.get(f"/console/executions/{execution.pk}/").content.decode()
    assert 'id="approval-panel"' in page and "Build the booking API" in page
    assert 'id="approve-form"' not in page and 'id="reject-form"' not in page
    assert viewer.post(f"/console/executions/{execution.pk}/approve").status_code == 403
    assert Execution.objects.get(pk=execution.pk).status == "awaiting_approval"


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def planned_at_once(monkeypatch):
    """Planning runs in this process as soon as the request is committed (no workers here)."""
    from executions import messages

    monkeypatch.setattr(messages, "send_plan", execution_plan)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("answer,status", [("y", "executing"), ("n", "cancelled"), ("", "cancelled")])
def test_execute_approve_shows_the_plan_and_cost_and_asks(
    pm_plan, planned_at_once, monkeypatch, capsys, answer, status
):
    from django.core.management import call_command

    configure(latency=0.5)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)

    call_command("execute", REQUEST, "--client", "acme", "--approve", "--mode", "parallel")

    out = " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal's width
    assert "api" in out and "Build the booking API" in out and "after api" in out
    assert "fee $2.40 (charged on approval)" in out and "estimated model cost $" in out
    assert asked == ["Approve and pay $2.40? [y/N] "]
    execution = Execution.objects.get()
    assert execution.status == status
    assert fee_entries(execution) == ([Decimal("2.40")] if answer == "y" else [])


@pytest.mark.django_db(transaction=True)
def test_execute_with_a_project_follows_up_its_latest_execution(pm_plan, planned_at_once, capsys):
    from django.core.management import call_command

    configure(latency=0.5)
    call_command("execute", REQUEST, "--client", "acme", "--project", "bistro")
    first = Execution.objects.get()
    call_command("execute", "Add a gift card page", "--client", "acme", "--project", "bistro")

    follow_up = Execution.objects.exclude(pk=first.pk).get()
    assert follow_up.follows == first and follow_up.project == "bistro"
    assert f"following up {first.pk}" in " ".join(capsys.readouterr().out.split())
