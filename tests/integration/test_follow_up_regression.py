"""A follow-up is tested as the project it lands in: when its change breaks a test the project
already had, the integration gate fails on the merged project, the lineage whose file the failure
names fixes it, and the follow-up lands with the project's tests passing. The models are the fake
servers behind the real SDKs, answering as each request asks."""

import json

import pytest

from executions.models import Conflict
from executions.services import execution_create
from pools import sandbox
from tests.conftest import Workers, wait_for_status
from tests.fakes.agency import AGENT_TASK
from tests.fakes.llm_server import FakeLLMServer
from tests.integration.test_real_sdk_agents import KEY_ENV, configure_real_models

pytestmark = pytest.mark.skipif(not sandbox.availability()[0], reason="the gate needs bubblewrap")

FIRST, FOLLOW_UP = "Build the calculator library", "Give the calculator a version function"
ADD = "def add(a, b):\n    return a + b\n"
VERSION = "\n\ndef version():\n    return '2'\n"
PROJECT_FILES = {
    "backend/app/__init__.py": "",
    "backend/app/calc.py": ADD,
    "backend/tests/test_calc.py": (
        "from app.calc import add\n\n\ndef test_add():\n    assert add(2, 2) == 4\n"
    ),
}


def plan(description: str) -> str:
    task = {
        "id": "task_1",
        "pool": "codegen",
        "description": description,
        "priority": 1,
        "timeout_sec": 30,
        "blocked_by": [],
        "context": {},
    }
    return json.dumps({"tasks": [task]})


def files(changes: dict[str, str]) -> str:
    return json.dumps(
        {"summary": "Done.", "findings": [], "files": [{"path": p, "content": c} for p, c in changes.items()]}
    )


def reply(body: dict) -> str:
    system = body.get("system") or body["messages"][0]["content"]
    prompt = body["messages"][-1]["content"]
    if system.startswith("You are the PM of a software agency"):
        return plan("Add version() to backend/app/calc.py" if FOLLOW_UP in prompt else "Write the calculator")
    if system.startswith("You are the PM writing"):
        return "Delivered."
    _, task = AGENT_TASK.search(prompt).groups()
    if task == "Write the calculator":
        return files(PROJECT_FILES)
    if "integration gate" in task:  # the fix, given the failing output
        return files({"backend/app/calc.py": ADD + VERSION})
    return files({"backend/app/calc.py": ADD.replace("a + b", "a - b") + VERSION})  # breaks test_add


@pytest.fixture
def server(transactional_db, redis_server):
    with FakeLLMServer(default_reply=reply) as running:
        configure_real_models(running)
        workers = Workers(env={KEY_ENV: "sk-fake-123", "OPENCLAW_OFFLINE": "0"}).start()
        yield running
        workers.stop()


def test_a_follow_up_that_breaks_the_projects_test_is_fixed_before_it_lands(server, client_and_key):
    client, _ = client_and_key
    first = execution_create(client=client, message=FIRST, session_key="a", project="calc")
    first = wait_for_status(first.pk, {"completed", "partial", "failed"}, timeout=60)
    assert first.status == "completed" and first.integration["passed"] == 1

    follow_up = execution_create(client=client, message=FOLLOW_UP, session_key="b", project="calc")
    follow_up = wait_for_status(follow_up.pk, {"completed", "partial", "failed"}, timeout=90)
    # Its own output has no test: only the project's test, from the first execution, caught it.
    [conflict] = Conflict.objects.filter(execution=follow_up, kind="integration")
    assert "FAILED tests/test_calc.py::test_add" in conflict.details["gate"]["output_tail"]
    assert conflict.status == "resolved" and conflict.details["deviating"] == ["task_1"]
    assert follow_up.status == "completed", follow_up.final_response
    assert follow_up.integration["ok"] and follow_up.integration["passed"] == 1

    from executions import projects

    landed = projects.result_files(follow_up)
    assert landed["backend/app/calc.py"] == ADD + VERSION
    assert landed["backend/tests/test_calc.py"] == PROJECT_FILES["backend/tests/test_calc.py"]
