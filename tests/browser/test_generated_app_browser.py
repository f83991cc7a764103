"""A generated app as its client runs it, in real headless Chromium: the offline agents' todo list,
its backend installed from its own requirements and served by uvicorn, its frontend installed with
npm and served by `next build` and `next start`, as their READMEs say.

The generated code is the offline agents' own templates, not a model's output: it runs here outside
the sandbox, as it runs on the client's machine. pip and npm fetch from the package registries.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from openclaw_site import web_tier
from tests.browser.test_console_browser import chromium, pytestmark  # noqa: F401 (fixture, markers)
from tests.processes import answers, spawn
from tests.unit.test_accounts import AREAS, generated

SHARED_LIST = "Build a todo list app"
RESTAURANT = "Build a restaurant website where staff add menu items, guests book tables and everyone logs in"
KANBAN = "Build a kanban board with columns and cards"
LOGS = settings.VAR_DIR / "test-logs"


def _wait_for(url: str, processes: list[subprocess.Popen], log: Path) -> None:
    if not answers(url, processes, timeout=60):
        raise RuntimeError(f"{url} did not answer; see {log}")


def _listed(backend: str) -> list[dict]:
    with urllib.request.urlopen(f"{backend}/api/todos", timeout=5) as response:
        return json.load(response)


def _written(request: str, root: Path) -> Path:
    from pools.contracts.derive import contract_for

    for path, content in generated(contract_for(request, AREAS), request).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A project whose backend's virtualenv (`venv`) and frontend's `node_modules` the apps share:
    every generated app has the same `requirements.txt` and `package.json`."""
    root = _written(SHARED_LIST, tmp_path_factory.mktemp("installed"))
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    install = [root / "venv" / "bin" / "pip", "install", "-q", "-r", "requirements.txt"]
    subprocess.run(install, cwd=root / "backend", env=_env(root), check=True, timeout=300)
    npm = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(npm, cwd=root / "frontend", env=_env(root), check=True, timeout=300)
    return root


def _env(root: Path) -> dict:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(root))}


@contextlib.contextmanager
def serving(request: str, root: Path, installed: Path):
    """The app of `request` written to `root`, its frontend's URL and its backend's while they run,
    each server in a process group of its own."""
    _written(request, root)
    for part, shared in (
        ("backend/requirements.txt", "venv"),
        ("frontend/package.json", "frontend/node_modules"),
    ):
        assert (root / part).read_text() == (installed / part).read_text()
        (root / shared).symlink_to(installed / shared)
    LOGS.mkdir(parents=True, exist_ok=True)
    servers: list[subprocess.Popen] = []
    try:
        with (
            web_tier.listening_socket("127.0.0.1", 0) as listener,
            open(LOGS / "generated-backend.log", "ab") as log,
        ):
            uvicorn = [str(root / "venv" / "bin" / "uvicorn"), "app.main:app", "--fd", str(listener.fileno())]
            env = {**_env(root), "DATABASE_PATH": str(root / "app.db")}
            servers.append(spawn(uvicorn, env, log, pass_fds=(listener.fileno(),), cwd=root / "backend"))
            backend = f"http://127.0.0.1:{listener.getsockname()[1]}"
        _wait_for(f"{backend}/docs", servers, LOGS / "generated-backend.log")
        env = {**_env(root), "BACKEND_URL": backend, "NEXT_TELEMETRY_DISABLED": "1"}
        build = ["npx", "next", "build"]
        subprocess.run(
            build, cwd=root / "frontend", env=env, check=True, timeout=300, stdout=subprocess.DEVNULL
        )
        with web_tier.listening_socket("127.0.0.1", 0) as probe:
            port = probe.getsockname()[1]  # a free port, for `next start`, which takes no socket
        with open(LOGS / "generated-frontend.log", "ab") as log:
            start = ["npx", "next", "start", "-H", "127.0.0.1", "-p", str(port)]
            servers.append(spawn(start, env, log, cwd=root / "frontend"))
        frontend = f"http://127.0.0.1:{port}"
        _wait_for(f"{frontend}/", servers, LOGS / "generated-frontend.log")
        yield frontend, backend
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)


@pytest.fixture
def page(chromium):  # noqa: F811
    """A page that records what goes wrong in it (`page.problems`): script errors, console errors and
    responses of 400 and more."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error" and page.problems.append(f"{message.text} {message.location}")
        ),
    )
    page.on(
        "response",
        lambda response: response.status >= 400 and page.problems.append(f"{response.status} {response.url}"),
    )
    yield page
    context.close()


def _patched(response) -> bool:
    return response.request.method == "PATCH" and response.ok


def _add(page, rows, name: str, **fields: str) -> None:
    from playwright.sync_api import expect

    for field, value in {"name": name, **fields}.items():
        page.fill(f'form input[name="{field}"]', value)
    page.get_by_role("button", name="Add").click()
    expect(rows.filter(has_text=name)).to_have_count(1)


def test_a_shared_todo_list_is_added_to_ticked_changed_and_deleted(page, installed, tmp_path):
    from playwright.sync_api import expect

    with serving(SHARED_LIST, tmp_path, installed) as (frontend, backend):
        page.goto(f"{frontend}/todos")
        rows = page.locator("main ul li")
        _add(page, rows, "Buy milk", due_at="2026-12-31T09:00")
        _add(page, rows, "Call mum", due_at="2027-01-02T18:30")
        expect(page.locator('form input[name="name"]')).to_have_value("")  # the form is cleared

        # Ticked in its row at once, and kept: the list comes back from the API so.
        milk = rows.filter(has_text="Buy milk")
        with page.expect_response(_patched):
            milk.get_by_role("checkbox").check()
            expect(milk.get_by_role("checkbox")).to_be_checked()  # before the API answers
        page.reload()
        expect(rows.filter(has_text="Buy milk").get_by_role("checkbox")).to_be_checked()
        expect(rows.filter(has_text="Call mum").get_by_role("checkbox")).not_to_be_checked()
        assert {row["name"]: row["done"] for row in _listed(backend)} == {"Buy milk": True, "Call mum": False}

        # A date and time as the reader's locale (en-US here) writes it.
        expect(rows.filter(has_text="Call mum")).to_contain_text("Call mum · Jan 2, 2027, 6:30 PM")

        # Edit fills the form with the row and marks the row; saving renames it and clears the due date
        # left empty (a todo needs none), keeping the rest.
        rows.filter(has_text="Call mum").get_by_role("button", name="Edit").click()
        expect(page.locator('form input[name="name"]')).to_have_value("Call mum")
        expect(page.locator("main li[aria-current]")).to_contain_text("Call mum")
        page.fill('form input[name="name"]', "Call mum tonight")
        page.fill('form input[name="due_at"]', "")
        page.get_by_role("button", name="Save changes").click()
        expect(rows.filter(has_text="Call mum tonight")).to_have_count(1)
        expect(page.get_by_role("button", name="Add")).to_be_visible()
        expect(page.locator("main li[aria-current]")).to_have_count(0)
        changed = {row["name"]: row for row in _listed(backend)}["Call mum tonight"]
        assert changed["due_at"] is None and changed["done"] is False

        rows.filter(has_text="Buy milk").get_by_role("button", name="Delete").click()
        expect(rows).to_have_count(1)
        page.reload()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_text("Call mum tonight done Edit Delete")  # no date to show
        assert [row["name"] for row in _listed(backend)] == ["Call mum tonight"]
    assert page.problems == []


def test_a_kanban_board_has_a_column_per_stage_and_a_card_moves_between_them(page, installed, tmp_path):
    from playwright.sync_api import expect

    with serving(KANBAN, tmp_path, installed) as (frontend, backend):
        page.goto(f"{frontend}/cards")
        cards = page.locator("main .board li")
        headings = page.locator("main .board section h2")
        _add(page, cards, "Ship it", stage="Done")
        _add(page, cards, "Write the spec", stage="To do")
        _add(page, cards, "Fix the login bug", stage="Doing")
        _add(page, cards, "Plan the release", stage="To do")
        _add(page, cards, "Try a dark theme", stage="Ideas")
        # The usual stages in their order, whatever order the cards came in; any other after them.
        expect(headings).to_have_text(["To do", "Doing", "Done", "Ideas"])
        to_do = page.get_by_role("region", name="To do")
        expect(to_do.locator("li")).to_have_text(
            ["Write the spec Edit Delete", "Plan the release Edit Delete"]
        )

        # A card's stage changed moves it to that column; an emptied column is gone.
        page.get_by_role("region", name="Ideas").get_by_role("button", name="Edit").click()
        expect(page.locator('form input[name="stage"]')).to_have_value("Ideas")
        page.fill('form input[name="stage"]', "Doing")
        page.get_by_role("button", name="Save changes").click()
        expect(headings).to_have_text(["To do", "Doing", "Done"])
        expect(page.get_by_role("region", name="Doing").locator("li")).to_have_count(2)
        page.reload()
        expect(headings).to_have_text(["To do", "Doing", "Done"])
        expect(page.get_by_role("region", name="Doing")).to_contain_text("Try a dark theme")
        with urllib.request.urlopen(f"{backend}/api/cards", timeout=5) as response:
            stages = {card["name"]: card["stage"] for card in json.load(response)}
        assert stages["Try a dark theme"] == "Doing"
    assert page.problems == []


def _account(page, frontend: str, email: str, button: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{frontend}/account")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', "correct horse battery")
    page.get_by_role("button", name=button).click()
    expect(page.get_by_text(f"Signed in as {email}.")).to_be_visible()


def _log_out(page, frontend: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{frontend}/account")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Sign up")).to_be_visible()


def test_each_guest_keeps_their_own_bookings_and_everyone_sees_the_menu(page, installed, tmp_path):
    from playwright.sync_api import expect

    with serving(RESTAURANT, tmp_path, installed) as (frontend, backend):
        page.goto(f"{frontend}/bookings")
        expect(page.locator("main [role=alert]")).to_have_text("could not load the list: log in first")
        # The 401 and the console's line of it, asked for; nothing else.
        assert [p for p in page.problems if "status of 401" not in p] == [
            f"401 {frontend}/api/bookings?offset=0"
        ]
        page.problems.clear()
        rows = page.locator("main ul li")

        _account(page, frontend, "ada@example.com", "Sign up")
        page.goto(f"{frontend}/menu_items")
        # A price is typed and shown as 12.99, and kept in cents.
        _add(page, rows, "Margherita", price_cents="12.99")
        expect(rows.first).to_contain_text("Margherita · 12.99")
        rows.first.get_by_role("button", name="Edit").click()
        expect(page.locator('form input[name="price_cents"]')).to_have_value("12.99")
        page.fill('form input[name="price_cents"]', "14.5")
        page.get_by_role("button", name="Save changes").click()
        expect(rows.first).to_contain_text("Margherita · 14.50")
        with urllib.request.urlopen(f"{backend}/api/menu_items", timeout=5) as response:
            assert [item["price_cents"] for item in json.load(response)] == [1450]
        page.goto(f"{frontend}/bookings")
        _add(page, rows, "Ada", party_size="4", starts_at="2026-12-24T20:00")
        expect(rows.first).to_contain_text("Ada · 4 · Dec 24, 2026, 8:00 PM")
        _log_out(page, frontend)

        # Bob sees the menu, not Ada's booking, and cannot delete Ada's menu item.
        _account(page, frontend, "bob@example.com", "Sign up")
        page.goto(f"{frontend}/bookings")
        expect(page.get_by_role("heading", name="Booking")).to_be_visible()
        expect(rows).to_have_count(0)
        page.goto(f"{frontend}/menu_items")
        rows.filter(has_text="Margherita").get_by_role("button", name="Delete").click()
        expect(page.locator("main [role=alert]")).to_have_text(
            "could not delete it: no such record of yours: 1"
        )
        expect(rows).to_have_count(1)
        # The 404 and the console's line of it, asked for; nothing else.
        assert [p for p in page.problems if "status of 404" not in p] == [f"404 {frontend}/api/menu_items/1"]
        page.problems.clear()
        _log_out(page, frontend)

        _account(page, frontend, "ada@example.com", "Log in")
        page.goto(f"{frontend}/bookings")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Ada · 4")
    assert page.problems == []
