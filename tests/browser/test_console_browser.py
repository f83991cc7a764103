"""The console in real headless Chromium, against daphne and real workers on the test database.

Screenshots of every page go to tests/screenshots/ for review.
"""

import os
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT, Workers, configure, wait_for_status, worker_env
from tests.processes import Daphne

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "tests" / "screenshots"
PASSWORD = "console-pass-123"

pytestmark = [
    # Only a developer machine without Chromium may skip; CI installs it and must run these.
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason="Chromium not installed (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """daphne serving the ASGI app (pages, websockets, static files) on the test database."""
    with django_db_blocker.unblock():
        env = worker_env()
    with Daphne(env, settings.VAR_DIR / "test-logs" / "daphne.log") as daphne:
        yield daphne.url


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, server, monkeypatch):
    # Playwright's sync API keeps an event loop on this thread; the ORM calls of the test itself
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=server)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def staff_user(transactional_db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="executions", codename__in=["add_execution", "change_execution"]
        )
    )
    return user


def log_in(page):
    page.goto("/console/")
    assert "/console/login/" in page.url
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.screenshot(path=SCREENSHOTS / "login.png")
    page.click("button[type=submit]")
    page.wait_for_url("**/console/")
    page.wait_for_selector("#live-indicator[data-state=live]")


def shot(page, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page in a full-page shot
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def task_statuses(page) -> dict[str, str]:
    return dict(
        page.eval_on_selector_all(
            "[data-task]", "els => els.map(e => [e.dataset.task, e.dataset.taskStatus])"
        )
    )


def test_submit_watch_live_and_inspect(page, server, staff_user):
    from django.db.models import Count

    from executions.models import Attempt, Client, Execution, Task

    workers = Workers().start()
    try:
        # The backend's first attempt fails, so the timeline shows a retry.
        configure(
            latency=0.7,
            codegen=1,
            security=1,
            database=1,
            options={"fail_rules": [{"match": "backend", "attempts": [1], "error": "error"}]},
        )
        Client.objects.create(name="acme")
        Client.objects.create(name="globex")
        log_in(page)
        shot(page, "executions-empty")

        page.click("text=New request")
        page.fill("#id_message", "Build a restaurant website with online booking and secure payments")
        page.fill("#id_project", "delhi-palace")
        assert page.input_value("#id_client") == str(Client.objects.get(name="acme").pk)
        shot(page, "new-request")
        page.click("button:has-text('Start execution')")
        page.wait_for_url("**/console/executions/exec_*/")
        page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

        # Sample the task statuses on every snapshot the page renders (body[data-snapshot-seq]).
        seen: dict[str, list[str]] = {}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            rendered = page.get_attribute("body", "data-snapshot-seq")
            for key, status in task_statuses(page).items():
                if not seen.get(key) or seen[key][-1] != status:
                    seen.setdefault(key, []).append(status)
            if page.query_selector("#exec-status [data-status=completed]"):
                break
            if (
                any(s[-1] == "running" for s in seen.values())
                and not (SCREENSHOTS / "execution-running.png").exists()
            ):
                shot(page, "execution-running")
            page.wait_for_function(
                "seq => document.body.dataset.snapshotSeq !== seq",
                arg=rendered,
                timeout=max(1, deadline - time.monotonic()) * 1000,
            )
        execution = Execution.objects.get()
        assert execution.status == "completed", seen
        assert page.evaluate("window.__sameDocument") is True
        assert len(seen) == execution.tasks.count() >= 3
        # Every task was watched waiting or running before it succeeded, without a reload.
        for key, history in seen.items():
            assert history[-1] == "succeeded", (key, history)
            assert set(history[:-1]) & {"pending", "ready", "queued", "running"}, (key, history)
        assert any("running" in h for h in seen.values())
        shot(page, "execution-tasks")
        retried = execution.tasks.annotate(n=Count("attempts")).get(n=2).key
        page.click(f"[data-task={retried}] > summary")
        assert page.locator(f"[data-task={retried}] .task-body tbody tr").count() == 2  # both attempts listed
        first_file = page.locator(f"[data-task={retried}] .files summary").first
        first_file.click()
        path = first_file.locator(".mono").inner_text()
        expected = next(
            f["content"]
            for f in Task.objects.get(execution=execution, key=retried).result["files"]
            if f["path"] == path
        )
        page.wait_for_function(
            "([key, path]) => document.querySelector(`[data-task=${key}] pre[data-file='${path}']`)"
            ".textContent.length > 20",
            arg=[retried, path],
        )
        assert page.inner_text(f"[data-task={retried}] pre[data-file='{path}']").strip() == expected.strip()
        shot(page, "execution-task-detail")

        page.click("#tab-dag")
        assert page.locator("#dag .node").count() == execution.tasks.count()
        assert page.locator("#dag .node-succeeded").count() == execution.tasks.count()
        tasks = list(execution.tasks.all())
        assert page.locator("#dag path.edge:not(.edge-soft)").count() == sum(len(t.blocked_by) for t in tasks)
        assert page.locator("#dag path.edge-soft").count() == sum(len(t.soft_deps) for t in tasks)
        shot(page, "execution-dag")

        page.click("#tab-timeline")
        attempts = Attempt.objects.filter(task__execution=execution).count()
        assert page.locator("#timeline rect.att").count() == attempts
        assert page.locator("#timeline rect[data-outcome=succeeded]").count() == execution.tasks.count()
        assert (
            page.locator("#timeline rect[data-outcome=failed]").count()
            == attempts - execution.tasks.count()
            == 1
        )
        assert page.locator("#compare .compare-row").count() == 3
        shot(page, "execution-timeline")

        page.click("#tab-response")
        assert page.locator("#final-response h1, #final-response h2, #final-response p").count() > 0
        shot(page, "execution-response")
        page.click("#tab-activity")
        assert page.locator("#activity li").count() == execution.events.count()
        shot(page, "execution-activity")

        page.click("nav.mainnav >> text=Pools")
        page.wait_for_selector("[data-pool=codegen]")
        assert "1 / 1" in page.inner_text("[data-pool=codegen] .meter-head") or "0 / 1" in page.inner_text(
            "[data-pool=codegen] .meter-head"
        )
        shot(page, "pools")

        page.click("nav.mainnav >> text=Executions")
        row = page.locator(f"tr[data-execution='{execution.pk}']")
        assert row.get_attribute("data-status") == "completed"
        assert "delhi-palace" in row.inner_text()
        shot(page, "executions")

        # /metrics (this test process, daphne and the worker processes share only the database).
        with urllib.request.urlopen(f"{server}/metrics", timeout=5) as response:
            from tests.unit.test_metrics_health_logs import parse_metrics

            samples = parse_metrics(response.read().decode())
        counted = sum(
            v for (name, _), v in samples.items() if name == "parallel_execution_task_duration_seconds_count"
        )
        assert counted == attempts
        assert page.js_errors == []
    finally:
        workers.stop()


def test_cancel_a_running_execution(page, staff_user):
    from executions.models import Client, Execution
    from executions.services import execution_create

    workers = Workers().start()
    try:
        configure(latency=6, codegen=1, security=1, database=1)
        client = Client.objects.create(name="acme")
        execution = execution_create(
            client=client, message="Build a REST API with a frontend", session_key="ops", project="slow-one"
        )
        log_in(page)
        page.goto(f"/console/executions/{execution.pk}/")
        page.wait_for_selector("[data-task-status=running]", timeout=15000)
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("button:has-text('Cancel execution')")
        page.wait_for_selector("#exec-status [data-status=cancelled]")
        assert "Execution cancelled" in page.inner_text(".flash")
        page.wait_for_function("document.querySelectorAll('[data-task-status=running]').length === 0")
        assert set(task_statuses(page).values()) == {"cancelled"}
        assert page.locator("#cancel-form").is_hidden()
        page.click("#tab-timeline")
        assert page.locator("#timeline rect[data-outcome=cancelled]").count() >= 1
        shot(page, "execution-cancelled")
        assert wait_for_status(execution.pk, {"cancelled"}, timeout=5).status == "cancelled"
        assert Execution.objects.get(pk=execution.pk).tasks.exclude(status="cancelled").count() == 0
        assert page.js_errors == []
    finally:
        workers.stop()


def test_script_in_request_or_model_output_stays_inert(page, staff_user):
    from django.utils import timezone

    from executions.models import Client, Execution

    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    execution = Execution.objects.create(
        id=Execution.new_id("evil"),
        client=Client.objects.create(name="acme"),
        session_key="evil",
        message=f"Build this {hostile}",
        project="xss",
        status="completed",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        final_response=f'# Result\n\n{hostile}\n\n<svg onload="window.__pwned=3"></svg>\n\n'
        "[link](javascript:window.__pwned=4)",
    )
    log_in(page)
    page.goto(f"/console/executions/{execution.pk}/#response")
    page.wait_for_selector("#final-response h1")
    # Nothing that could run later made it into the page: no element that loads or links, the
    # javascript: link left as text. What ran while rendering would have set __pwned by now.
    assert page.locator("#final-response a, #final-response [onload], #final-response [onerror]").count() == 0
    assert "[link](javascript:window.__pwned=4)" in page.inner_text("#final-response")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#final-response script, #final-response img, #final-response svg").count() == 0
    assert hostile in page.inner_text("#request-text")  # shown as text, exactly as the client wrote it
    shot(page, "execution-hostile-output")


def test_a_duplicate_event_changes_nothing_and_a_gap_asks_the_server_to_resume(page, staff_user):
    import json
    import re

    from django.utils import timezone

    from executions import events
    from executions.models import Client, Execution

    execution = Execution.objects.create(
        id=Execution.new_id("dup"),
        client=Client.objects.create(name="acme"),
        session_key="dup",
        message="Build it",
        project="dup",
        status="executing",
        started_at=timezone.now(),
    )
    for i in (1, 2, 3):
        events.emit(execution.pk, "task.queued", task_key=f"task_{i}", payload={"pool": "codegen"})

    # Between the page and the server: the test sees what the page sends and can deliver
    # messages of its own, as a channel layer that repeats or loses one would.
    routes, sent_by_page = [], []

    def route(ws):
        server = ws.connect_to_server()

        def from_page(message):
            sent_by_page.append(json.loads(message))
            server.send(message)

        ws.on_message(from_page)
        server.on_message(ws.send)
        routes.append(ws)

    page.route_web_socket(re.compile(r"/ws/executions/"), route)
    log_in(page)
    page.goto(f"/console/executions/{execution.pk}/#activity")
    page.wait_for_selector("body[data-event-seq='3'][data-snapshot-seq='3']")
    assert page.locator("#activity li").count() == 3

    # A repeated delivery of seq 2: handled (the page counts it) and nothing else changes.
    repeated = execution.events.get(seq=2).as_message()
    routes[-1].send(json.dumps({"kind": "event", "event": repeated}))
    page.wait_for_selector("body[data-events-ignored='1']")
    assert page.locator("#activity li").count() == 3
    assert page.get_attribute("body", "data-event-seq") == "3"

    # Seq 5 without 4: not shown; the page asks the server to resume after 3.
    ahead = {**repeated, "seq": 5, "type": "task.started", "task": "task_9"}
    routes[-1].send(json.dumps({"kind": "event", "event": ahead}))
    page.wait_for_selector("body[data-resumed-from='3']")
    assert {"resume": 3} in sent_by_page
    assert page.locator("#activity li").count() == 3
    assert page.locator("#activity li[data-seq='5']").count() == 0

    # The real seq 4 arrives through the server and is shown.
    events.emit(execution.pk, "task.queued", task_key="task_4", payload={"pool": "codegen"})
    page.wait_for_selector("#activity li[data-seq='4']")
    page.wait_for_selector("body[data-event-seq='4'][data-snapshot-seq='4']")
    assert page.locator("#activity li").count() == 4
    assert page.js_errors == []


def test_an_attempts_transcript_reads_as_a_conversation(page, staff_user):
    from executions.models import Client, Task
    from executions.services import execution_create

    workers = Workers().start()
    try:
        configure(latency=0.2, max_turns=16, options={"flaws": ["failing_test"]})
        client = Client.objects.create(name="acme")
        execution = execution_create(
            client=client,
            message="Build a restaurant website with online booking and secure payments",
            session_key="transcript",
        )
        wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=60)
        backend = next(
            t for t in Task.objects.filter(execution=execution) if "backend" in t.description.lower()
        )
        log_in(page)
        page.goto(f"/console/executions/{execution.pk}/")
        page.click(f"[data-task={backend.key}] > summary")
        page.click(f"[data-transcript='{backend.key}#1'] > summary")
        turns = page.locator(f"[data-transcript='{backend.key}#1'] .turn")
        turns.first.wait_for()
        assert turns.count() == 5 == backend.result["turns"]
        assert "→ run(command=" in turns.nth(1).inner_text()
        first_run, second_run = turns.nth(1).locator(".tool-output"), turns.nth(3).locator(".tool-output")
        assert "1 failed" in first_run.text_content() and "5 passed" in second_run.text_content()
        assert "Tests: 5 passed, 0 failed" in page.inner_text(f"[data-task={backend.key}] .task-body")
        shot(page, "execution-transcript")
        assert page.js_errors == []
    finally:
        workers.stop()


def test_a_running_attempts_transcript_grows_live(page, staff_user):
    from executions.models import AttemptTurn, Client, Task
    from executions.services import execution_create

    workers = Workers().start()
    try:
        # A codegen agent's three turns take 3 s each: the transcript is watched between them, the
        # page opened within the 6 s between the first turn and the last (signed in beforehand).
        configure(latency=9, max_turns=16)
        log_in(page)
        client = Client.objects.create(name="acme")
        execution = execution_create(
            client=client, message="Build a contact form backend API", session_key="live"
        )
        deadline = time.monotonic() + 30
        while not AttemptTurn.objects.filter(
            attempt__task__execution=execution, attempt__task__pool="codegen"
        ).exists():
            assert time.monotonic() < deadline, "no agent turn recorded"
            time.sleep(0.05)
        task = Task.objects.filter(execution=execution, pool="codegen").order_by("pk").first()
        page.goto(f"/console/executions/{execution.pk}/")
        page.evaluate("window.__sameDocument = true")
        page.click(f"[data-task={task.key}] > summary")
        page.click(f"[data-transcript='{task.key}#1'] > summary")
        turns = f"[data-transcript='{task.key}#1'] .turn"
        page.wait_for_selector(turns)
        shown = page.locator(turns).count()
        assert shown < 3
        page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length > n", arg=[turns, shown])
        assert page.evaluate("window.__sameDocument") is True
        assert page.js_errors == []
        wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=60)
    finally:
        workers.stop()
