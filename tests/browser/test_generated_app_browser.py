"""A generated app as its client runs it, in real headless Chromium: the offline agents' todo list,
its backend installed from its own requirements and served by uvicorn, its frontend installed with
npm and served by `next build` and `next start`, as their READMEs say.

The generated code is the offline agents' own templates, not a model's output: it runs here outside
the sandbox, as it runs on the client's machine. pip and npm fetch from the package registries.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from openclaw_site import web_tier
from tests.browser.test_console_browser import chromium, pytestmark  # noqa: F401 (fixture, markers)
from tests.processes import spawn
from tests.unit.test_accounts import AREAS, generated

REQUEST = "Build a todo list app"


def _answers(url: str, processes: list[subprocess.Popen], log: Path, timeout: float = 60) -> None:
    """Returns once `url` answers 200; raises if a process has ended or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer; see {log}")
        time.sleep(0.1)


def _listed(backend: str) -> list[dict]:
    with urllib.request.urlopen(f"{backend}/api/todos", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def todo_app(tmp_path_factory):
    """The app's frontend URL and its backend's, each server in a process group of its own."""
    from pools.contracts.derive import contract_for

    root = tmp_path_factory.mktemp("todo-app")
    for path, content in generated(contract_for(REQUEST, AREAS), REQUEST).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    logs = settings.VAR_DIR / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(root))}
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    install = [root / "venv" / "bin" / "pip", "install", "-q", "-r", "requirements.txt"]
    subprocess.run(install, cwd=root / "backend", env=env, check=True, timeout=300)
    npm = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(npm, cwd=root / "frontend", env=env, check=True, timeout=300)

    servers: list[subprocess.Popen] = []
    try:
        with (
            web_tier.listening_socket("127.0.0.1", 0) as listener,
            open(logs / "generated-backend.log", "ab") as log,
        ):
            uvicorn = [str(root / "venv" / "bin" / "uvicorn"), "app.main:app", "--fd", str(listener.fileno())]
            backend_env = {**env, "DATABASE_PATH": str(root / "app.db")}
            servers.append(
                spawn(uvicorn, backend_env, log, pass_fds=(listener.fileno(),), cwd=root / "backend")
            )
            backend = f"http://127.0.0.1:{listener.getsockname()[1]}"
        _answers(f"{backend}/api/todos", servers, logs / "generated-backend.log")
        frontend_env = {**env, "BACKEND_URL": backend, "NEXT_TELEMETRY_DISABLED": "1"}
        subprocess.run(
            ["npx", "next", "build"],
            cwd=root / "frontend",
            env=frontend_env,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        with web_tier.listening_socket("127.0.0.1", 0) as probe:
            port = probe.getsockname()[1]  # a free port, for `next start`, which takes no socket
        with open(logs / "generated-frontend.log", "ab") as log:
            start = ["npx", "next", "start", "-H", "127.0.0.1", "-p", str(port)]
            servers.append(spawn(start, frontend_env, log, cwd=root / "frontend"))
        frontend = f"http://127.0.0.1:{port}"
        _answers(f"{frontend}/todos", servers, logs / "generated-frontend.log")
        yield frontend, backend
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)


def test_a_shared_todo_list_is_added_to_ticked_changed_and_deleted(chromium, todo_app):  # noqa: F811
    from playwright.sync_api import expect

    frontend, backend = todo_app
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: message.type == "error" and errors.append(f"{message.text} {message.location}"),
    )
    page.on("response", lambda response: response.status >= 400 and errors.append(response.url))
    page.goto(f"{frontend}/todos")
    rows = page.locator("main ul li")

    for name, due in (("Buy milk", "2026-12-31T09:00"), ("Call mum", "2027-01-02T18:30")):
        page.fill('form input[name="name"]', name)
        page.fill('form input[name="due_at"]', due)
        page.get_by_role("button", name="Add").click()
        expect(rows.filter(has_text=name)).to_have_count(1)
    expect(page.locator('form input[name="name"]')).to_have_value("")  # the form is cleared

    # Ticked in its row, kept ticked: the list comes back from the API so.
    milk = rows.filter(has_text="Buy milk")
    milk.get_by_role("checkbox").check()
    expect(milk.get_by_role("checkbox")).to_be_checked()
    page.reload()
    expect(rows.filter(has_text="Buy milk").get_by_role("checkbox")).to_be_checked()
    expect(rows.filter(has_text="Call mum").get_by_role("checkbox")).not_to_be_checked()
    assert {row["name"]: row["done"] for row in _listed(backend)} == {"Buy milk": True, "Call mum": False}

    # Edit fills the form with the row; saving changes the name and keeps the rest.
    rows.filter(has_text="Call mum").get_by_role("button", name="Edit").click()
    expect(page.locator('form input[name="name"]')).to_have_value("Call mum")
    page.fill('form input[name="name"]', "Call mum tonight")
    page.get_by_role("button", name="Save changes").click()
    expect(rows.filter(has_text="Call mum tonight")).to_have_count(1)
    expect(page.get_by_role("button", name="Add")).to_be_visible()
    changed = {row["name"]: row for row in _listed(backend)}["Call mum tonight"]
    assert changed["due_at"] == "2027-01-02T18:30" and changed["done"] is False

    rows.filter(has_text="Buy milk").get_by_role("button", name="Delete").click()
    expect(rows).to_have_count(1)
    page.reload()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Call mum tonight")
    assert [row["name"] for row in _listed(backend)] == ["Call mum tonight"]
    assert errors == []
    context.close()
