"""Console pages through Django's test client: access, filters, actions, the new-request form,
pool statistics and the sanitizing of untrusted markdown."""

import json
import re
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client as Browser
from django.utils import timezone

from executions.console_selectors import percentile, render_markdown
from executions.models import Attempt, Client, Conflict, Execution, Task
from pools.models import WorkerPool

pytestmark = pytest.mark.django_db


def staff_browser(username: str, *permissions: str) -> Browser:
    """A logged-in staff member holding `permissions` (codenames of the executions app)."""
    user = get_user_model().objects.create_user(username, password="pw-12345678", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="executions", codename__in=permissions)
    )
    browser = Browser()
    browser.force_login(user)
    return browser


@pytest.fixture
def staff():
    """Staff with the permissions the admin asks for to change and add executions."""
    return staff_browser("ops", "change_execution", "add_execution")


@pytest.fixture
def viewer():
    """Staff who may look but not act."""
    return staff_browser("viewer")


def make_execution(client_name="acme", *, status="executing", project="", message="Build a site", **fields):
    client, _ = Client.objects.get_or_create(name=client_name)
    return Execution.objects.create(
        id=Execution.new_id("t"),
        client=client,
        session_key="t",
        message=message,
        status=status,
        project=project,
        **fields,
    )


def add_task(execution, key, *, pool="codegen", status="succeeded", blocked_by=(), **fields):
    return Task.objects.create(
        execution=execution,
        key=key,
        pool=pool,
        description=f"{key} work",
        status=status,
        blocked_by=list(blocked_by),
        **fields,
    )


def add_attempt(task, number, seconds, status="succeeded", model="offline:m"):
    start = timezone.now() - timedelta(seconds=100)
    return Attempt.objects.create(
        task=task,
        number=number,
        status=status,
        model=model,
        started_at=start,
        finished_at=start + timedelta(seconds=seconds),
        lease_expires_at=start,
        deadline_at=start,
    )


def test_root_redirects_to_the_console(client):
    assert client.get("/").headers["Location"] == "/console/"


def test_pages_need_a_staff_login(client):
    for url in ("/console/", "/console/pools/", "/console/new/", "/console/executions.json"):
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/console/login/")


def test_login_page_refuses_non_staff_and_admits_staff(client):
    user_model = get_user_model()
    user_model.objects.create_user("client-user", password="pw-12345678")
    user_model.objects.create_user("ops", password="pw-12345678", is_staff=True)
    refused = client.post("/console/login/", {"username": "client-user", "password": "pw-12345678"})
    assert refused.status_code == 200 and "no access to the console" in refused.content.decode()
    admitted = client.post("/console/login/", {"username": "ops", "password": "pw-12345678"})
    assert admitted.headers["Location"] == "/console/"


def test_list_filters_by_status_project_and_client(staff):
    done = make_execution("acme", status="completed", project="shop")
    running = make_execution("acme", status="executing", project="blog")
    other = make_execution("globex", status="completed", project="shop")
    add_task(running, "task_1", status="running")
    add_task(running, "task_2", status="succeeded")

    def ids(query):
        return {row["id"] for row in staff.get(f"/console/executions.json{query}").json()["rows"]}

    assert ids("") == {done.pk, running.pk, other.pk}
    assert ids("?status=completed") == {done.pk, other.pk}
    assert ids("?project=blog") == {running.pk}
    assert ids(f"?client={other.client_id}&status=completed") == {other.pk}
    row = next(r for r in staff.get("/console/executions.json").json()["rows"] if r["id"] == running.pk)
    assert (row["tasks_total"], row["tasks_done"], row["tasks_running"]) == (2, 1, 1)
    assert (row["status_label"], row["planning"]) == ("executing", False)
    page = staff.get("/console/?status=completed")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_detail_page_keeps_untrusted_text_inert(staff):
    hostile = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1">'
    execution = make_execution(
        message=f"Build it {hostile}",
        status="completed",
        final_response=f"# Done\n\n{hostile}\n\n[click](javascript:alert(1))",
    )
    html = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert "<script>window.pwned" not in html and 'onerror="window' not in html
    rendered = staff.get(f"/console/executions/{execution.pk}.json").json()["final_response_html"]
    assert "<h1>Done</h1>" in rendered
    tags, attributes = elements(rendered)
    assert not tags & {"script", "img", "iframe"}
    assert not any(name.startswith("on") or "javascript:" in (value or "") for name, value in attributes)


def elements(html: str) -> tuple[set[str], list[tuple[str, str | None]]]:
    """The tags and attributes a browser would build from `html` (escaped text is not markup)."""
    tags, attributes = set(), []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            attributes.extend(attrs)

    Collector().feed(html)
    return tags, attributes


def test_render_markdown_keeps_formatting_and_drops_active_content():
    html = render_markdown(
        "**bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<iframe src=https://x></iframe>\n\n"
        "[ok](https://example.com) [bad](javascript:alert(1))"
    )
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<table>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">ok</a>' in html
    tags, attributes = elements(html)
    assert "iframe" not in tags and ("href", "javascript:alert(1)") not in attributes


def test_snapshot_has_tasks_attempts_conflicts_and_sequence(staff):
    execution = make_execution(next_seq=7)
    first = add_task(
        execution,
        "task_1",
        status="succeeded",
        result={
            "summary": "API built",
            "files": [{"path": "app/main.py", "content": "print('hi')\n"}],
            "findings": [],
        },
    )
    add_attempt(first, 1, 2.0, status="failed")
    add_attempt(first, 2, 3.0)
    add_task(execution, "task_2", pool="security", status="pending", blocked_by=["task_1"])
    Conflict.objects.create(
        execution=execution,
        kind="security_finding",
        between=["task_2", "task_1"],
        description="CSRF missing",
        status="resolved",
        resolution="Added CSRF middleware",
    )
    snapshot = staff.get(f"/console/executions/{execution.pk}.json").json()
    assert snapshot["last_seq"] == 7
    task_1, task_2 = snapshot["tasks"]
    assert [a["status"] for a in task_1["attempts"]] == ["failed", "succeeded"]
    assert task_1["files"] == [{"path": "app/main.py", "lines": 2, "bytes": 12}]
    files = staff.get(f"/console/executions/{execution.pk}/tasks/task_1/files.json").json()["files"]
    assert files == [{"path": "app/main.py", "content": "print('hi')\n"}]
    assert staff.get(f"/console/executions/{execution.pk}/tasks/task_9/files.json").status_code == 404
    assert task_1["summary"] == "API built" and task_2["blocked_by"] == ["task_1"]
    assert snapshot["conflicts"][0]["resolution"] == "Added CSRF middleware"
    assert snapshot["can_cancel"] and not snapshot["can_retry"]


def test_snapshot_carries_counts_progress_and_labels_the_page_shows(staff):
    execution = make_execution(status="budget_exceeded", finished_at=timezone.now())
    add_task(execution, "task_1", status="succeeded")
    add_task(execution, "task_2", status="running")
    add_task(execution, "task_3", status="dead")
    add_task(execution, "task_4", status="queued")
    Conflict.objects.create(
        execution=execution, kind="merge", between=["task_1", "task_2"], status="resolved"
    )
    Conflict.objects.create(execution=execution, kind="merge", between=["task_1", "task_3"])
    snapshot = staff.get(f"/console/executions/{execution.pk}.json").json()
    assert snapshot["task_counts"] == {
        "total": 4,
        "succeeded": 1,
        "running": 1,
        "dead_or_blocked": 1,
        "cancelled": 0,
    }
    assert (snapshot["progress_pct"], snapshot["conflicts_resolved"]) == (25, 1)
    assert snapshot["status_label"] == "budget exceeded" and snapshot["terminal"]
    assert {t["key"]: (t["running"], t["waiting"]) for t in snapshot["tasks"]} == {
        "task_1": (False, False),
        "task_2": (True, False),
        "task_3": (False, False),
        "task_4": (False, True),
    }
    assert not snapshot["can_cancel"] and not snapshot["can_retry"]  # budget_exceeded: neither applies


def test_saved_share_against_the_serial_estimate_once_delivered(staff):
    start = timezone.now() - timedelta(seconds=30)
    done = make_execution(status="completed", started_at=start, finished_at=start + timedelta(seconds=30))
    Execution.objects.filter(pk=done.pk).update(serial_estimate_sec=120)
    running = make_execution(status="executing", started_at=start)
    Execution.objects.filter(pk=running.pk).update(serial_estimate_sec=120)
    assert staff.get(f"/console/executions/{done.pk}.json").json()["saved_vs_serial"] == pytest.approx(0.75)
    assert staff.get(f"/console/executions/{running.pk}.json").json()["saved_vs_serial"] is None


def test_cancel_and_retry_are_csrf_protected_posts(staff):
    execution = make_execution(status="executing")
    add_task(execution, "task_1", status="running")
    strict = Browser(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.get(username="ops"))
    assert strict.post(f"/console/executions/{execution.pk}/cancel").status_code == 403
    assert staff.get(f"/console/executions/{execution.pk}/cancel").status_code == 405
    execution.refresh_from_db()
    assert execution.status == "executing"

    page = strict.get(f"/console/executions/{execution.pk}/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = strict.post(f"/console/executions/{execution.pk}/cancel", {"csrfmiddlewaretoken": token})
    assert response.headers["Location"] == f"/console/executions/{execution.pk}/"
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert Task.objects.get(execution=execution).status == "cancelled"


def test_retry_reopens_dead_and_blocked_tasks(staff):
    execution = make_execution(status="partial", finished_at=timezone.now())
    add_task(execution, "task_1", status="succeeded")
    add_task(execution, "task_2", status="dead", failed_attempts=3)
    add_task(execution, "task_3", status="blocked", blocked_by=["task_2"])
    assert staff.get(f"/console/executions/{execution.pk}.json").json()["can_retry"]
    staff.post(f"/console/executions/{execution.pk}/retry")
    execution.refresh_from_db()
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert execution.status == "executing"
    assert statuses == {"task_1": "succeeded", "task_2": "ready", "task_3": "pending"}


def test_new_request_form_starts_an_execution_for_the_chosen_client(staff):
    Client.objects.create(name="acme")
    globex = Client.objects.create(name="globex")
    form = staff.get("/console/new/").content.decode()
    assert re.search(r'<option value="\d+" selected>acme</option>', form)  # the first client by default
    response = staff.post(
        "/console/new/",
        {
            "client": globex.pk,
            "message": "Build a shop",
            "project": "shop",
            "mode": "serial",
            "budget_usd": "12.50",
        },
    )
    execution = Execution.objects.get()
    assert response.headers["Location"] == f"/console/executions/{execution.pk}/"
    assert (execution.client, execution.project, execution.requested_mode, execution.budget_usd) == (
        globex,
        "shop",
        "serial",
        Decimal("12.50"),
    )
    assert (
        execution.session_key == "console-ops" and execution.events.filter(type="execution.created").exists()
    )
    empty = staff.post("/console/new/", {"client": globex.pk, "message": "   ", "mode": "auto"})
    assert "Describe what to build." in empty.content.decode() and Execution.objects.count() == 1


def test_pool_statistics(staff):
    WorkerPool.objects.create(name="codegen", max_concurrent=3, max_retries=2)
    WorkerPool.objects.create(name="security", max_concurrent=2)
    execution = make_execution()
    for i, seconds in enumerate([1, 2, 3, 4, 10], start=1):
        add_attempt(add_task(execution, f"done_{i}"), 1, seconds)
    retried = add_task(execution, "retried", status="dead")
    add_attempt(retried, 1, 1, status="failed")
    add_attempt(retried, 2, 1, status="failed")
    add_task(execution, "waiting_1", status="ready")
    add_task(execution, "waiting_2", status="queued")
    add_task(execution, "busy", status="running")
    add_task(execution, "audit", pool="security", status="blocked")
    pools = {p["name"]: p for p in staff.get("/console/pools.json").json()["pools"]}
    codegen = pools["codegen"]
    assert (codegen["queue_length"], codegen["running"], codegen["max_concurrent"]) == (2, 1, 3)
    assert (codegen["p50_sec"], codegen["p95_sec"], codegen["samples"]) == (3.0, 10.0, 5)
    assert (codegen["retries"], codegen["dead"], codegen["succeeded"]) == (1, 1, 5)
    assert (pools["security"]["blocked"], pools["security"]["p50_sec"]) == (1, None)
    assert (
        json.loads(
            re.search(
                r'id="pools-data"[^>]*>(.*?)</script>', staff.get("/console/pools/").content.decode()
            ).group(1)
        )[0]["name"]
        == "codegen"
    )


def test_percentile_is_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile(list(range(1, 101)), 0.5) == 50
    assert percentile(list(range(1, 101)), 0.95) == 95


def test_staff_without_the_change_permission_cannot_cancel(viewer, staff):
    execution = make_execution(status="executing")
    add_task(execution, "task_1", status="running")
    assert viewer.post(f"/console/executions/{execution.pk}/cancel").status_code == 403
    execution.refresh_from_db()
    assert execution.status == "executing"
    assert Task.objects.get(execution=execution).status == "running"
    assert not execution.events.filter(type="task.cancelled").exists()

    staff.post(f"/console/executions/{execution.pk}/cancel")
    execution.refresh_from_db()
    assert execution.status == "cancelled"


def test_staff_without_the_change_permission_cannot_retry(viewer, staff):
    execution = make_execution(status="partial", finished_at=timezone.now())
    add_task(execution, "task_1", status="dead", failed_attempts=3)
    assert viewer.post(f"/console/executions/{execution.pk}/retry").status_code == 403
    execution.refresh_from_db()
    assert (execution.status, Task.objects.get(execution=execution).status) == ("partial", "dead")

    staff.post(f"/console/executions/{execution.pk}/retry")
    execution.refresh_from_db()
    assert (execution.status, Task.objects.get(execution=execution).status) == ("executing", "ready")


def test_staff_without_the_add_permission_cannot_start_a_request(viewer, staff):
    acme = Client.objects.create(name="acme")
    assert viewer.get("/console/new/").status_code == 403
    response = viewer.post("/console/new/", {"client": acme.pk, "message": "Build a shop", "mode": "auto"})
    assert response.status_code == 403 and not Execution.objects.exists()
    assert 'href="/console/new/"' not in viewer.get("/console/").content.decode()

    assert 'href="/console/new/"' in staff.get("/console/").content.decode()
    staff.post("/console/new/", {"client": acme.pk, "message": "Build a shop", "mode": "auto"})
    assert Execution.objects.get().client == acme


def test_the_page_offers_actions_only_to_who_may_take_them(viewer, staff):
    execution = make_execution(status="executing")
    add_task(execution, "task_1", status="running")
    for_viewer = viewer.get(f"/console/executions/{execution.pk}/").content.decode()
    assert viewer.get(f"/console/executions/{execution.pk}.json").json()["can_cancel"] is False
    assert 'id="cancel-form"' not in for_viewer and 'id="retry-form"' not in for_viewer

    for_staff = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert staff.get(f"/console/executions/{execution.pk}.json").json()["can_cancel"] is True
    cancel_form = re.search(r'<form [^>]*id="cancel-form"[^>]*>', for_staff).group(0)
    assert " hidden" not in cancel_form
    assert re.search(r'<form [^>]*id="retry-form"[^>]*\shidden', for_staff)  # nothing to retry while running
