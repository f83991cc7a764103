"""The integration gate: what it runs on a merged tree, and what it makes of the output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from executions.integration import implicated
from pools import integration_gate, sandbox
from pools.integration_gate import counts, plan, run_gate

BACKEND = {
    "backend/app/__init__.py": "",
    "backend/app/calc.py": "def add(a, b):\n    return a + b\n",
    "backend/tests/test_calc.py": (
        "from app.calc import add\n\n\ndef test_add():\n    assert add(2, 2) == 4\n"
    ),
}


def test_each_test_folder_runs_from_its_project_and_npm_only_with_a_test_script_and_node():
    files = {
        **BACKEND,
        "tests/test_top.py": "def test_x():\n    pass\n",
        "frontend/package.json": json.dumps({"scripts": {"test": "vitest run"}}),
        "admin/package.json": json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}}),
    }
    steps, notes = plan(files, node=True)
    assert [line for _, line in steps] == [
        "python3 -m compileall -q -x '(^|/)(node_modules|\\.venv)/' .",
        "python3 -m pytest -q",
        "cd backend && python3 -m pytest -q",
        "cd frontend && npm test --silent",
    ]
    assert notes == []
    steps, notes = plan(files, node=False)
    assert not any("npm" in line for _, line in steps)
    assert notes == ["frontend/package.json has a test script, but node is not installed: not run"]


def test_test_counts_add_up_over_every_pytest_summary():
    output = (
        "$ pytest backend\n..F\n1 failed, 2 passed in 0.05s\n"
        "$ pytest .\n.\n1 passed in 0.01s\nno tests ran in 0.01s\n"
    )
    assert counts(output) == (3, 1)


def test_a_failure_goes_to_the_lineage_of_the_failing_test_and_names_every_lineage_in_the_output():
    files = {**BACKEND, "database/schema.sql": "CREATE TABLE t (id INT);"}
    owner_of = dict.fromkeys(BACKEND, "task_2") | {"database/schema.sql": "task_3"}
    gate = {
        "output_tail": (
            "$ pytest backend\nF\n_____ test_add _____\ntests/test_calc.py:5: in test_add\n"
            "    open('../database/schema.sql')\nFileNotFoundError: database/schema.sql\n"
            "FAILED tests/test_calc.py::test_add - FileNotFoundError\n1 failed in 0.02s\n"
        )
    }
    assert implicated(gate, files, owner_of) == ("task_2", ["task_2", "task_3"])


needs_sandbox = pytest.mark.skipif(not sandbox.availability()[0], reason="needs bubblewrap")


@needs_sandbox
def test_the_gate_compiles_and_tests_the_merged_tree_in_the_sandbox(settings):
    passing = run_gate(BACKEND, timeout_sec=60, workspaces=settings.OPENCLAW_WORKSPACES_DIR)
    assert (passing.ran, passing.ok, passing.exit_code, passing.passed, passing.failed) == (
        True,
        True,
        0,
        1,
        0,
    )
    assert passing.steps == ["compile", "pytest backend"]

    broken = {**BACKEND, "backend/app/calc.py": "def add(a, b):\n    return a - b\n"}
    failing = run_gate(broken, timeout_sec=60, workspaces=settings.OPENCLAW_WORKSPACES_DIR)
    assert (failing.ran, failing.ok, failing.exit_code, failing.passed, failing.failed) == (
        True,
        False,
        1,
        0,
        1,
    )
    assert "FAILED tests/test_calc.py::test_add" in failing.output_tail
    assert "$ pytest backend" in failing.output_tail


def test_a_tree_with_nothing_to_run_is_not_run_and_a_syntax_error_fails_without_a_sandbox(monkeypatch):
    nothing = run_gate({"web/index.html": "<p>hi</p>"}, timeout_sec=5)
    assert (nothing.ran, nothing.ok, nothing.reason) == (
        False,
        True,
        "nothing to run: no Python code and no test script",
    )
    monkeypatch.setattr(integration_gate.sandbox, "availability", lambda: (False, "no bwrap"))
    broken = run_gate({"app/x.py": "def f(:\n", "app/y.json": "{"}, timeout_sec=5)
    assert (broken.ran, broken.ok) == (False, False)
    assert broken.reason == "the sandbox is unavailable: no bwrap"
    assert "syntax: app/x.py:1 Python syntax error" in broken.output_tail


@needs_sandbox
def test_the_command_it_reports_runs_as_shown_from_the_projects_root(settings, tmp_path):
    # Two test folders: the second `cd` must not start from the first one's folder.
    files = {
        **BACKEND,
        "worker/jobs.py": "def job():\n    return 1\n",
        "worker/tests/test_jobs.py": "from jobs import job\n\n\ndef test_job():\n    assert job() == 1\n",
    }
    gate = run_gate(files, timeout_sec=60, workspaces=settings.OPENCLAW_WORKSPACES_DIR)
    assert (gate.ok, gate.passed) == (True, 2), gate.output_tail
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    # On the host, with this interpreter (and its pytest) as `python3`.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    shown = subprocess.run(
        ["bash", "-c", gate.command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path},
    )
    assert shown.returncode == 0, (gate.command, shown.stdout, shown.stderr)
    assert shown.stdout.count("passed") == 2


def test_a_failing_test_of_the_project_goes_to_the_lineage_whose_file_the_traceback_names():
    # A follow-up changed the backend's module (task_2) and the page (task_1); the project's own
    # test, which no task of it wrote, now fails in that module.
    files = {**BACKEND, "frontend/page.js": "fetch('/api/x')"}
    owner_of = {"backend/app/calc.py": "task_2", "frontend/page.js": "task_1"}
    gate = {
        "output_tail": (
            "$ pytest backend\nF\n_____ test_add _____\ntests/test_calc.py:5: in test_add\n"
            "    assert add(2, 2) == 4\napp/calc.py:2: in add\n    return a - b\n"
            "FAILED tests/test_calc.py::test_add - assert 0 == 4\n1 failed in 0.02s\n"
        )
    }
    assert implicated(gate, files, owner_of) == ("task_2", ["task_2"])
