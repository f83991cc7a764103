"""The agent's tool loop on real workers, through the official Anthropic SDK against the fake server:
a codegen agent that writes code and a failing test, runs it in the sandbox, fixes it and finishes;
every turn billed once under its own key; the budget, a cancel and a SIGKILL in the middle of a loop.
"""

import time
from decimal import Decimal

import pytest
from django.test import Client as HttpClient

from executions.models import Attempt, AttemptTurn, Execution, LedgerEntry
from tests.conftest import Workers, wait_for_status
from tests.fakes.llm_server import FakeLLMServer, Reply

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

KEY_ENV = "OPENCLAW_TEST_FAKE_LLM_API_KEY"
PLAN = {
    "tasks": [
        {
            "id": "task_1",
            "pool": "codegen",
            "description": "Write calc.total with a test",
            "priority": 1,
            "timeout_sec": 60,
            "blocked_by": [],
            "context": {},
        }
    ]
}
FAILING = "def test_total():\n    from calc import total\n    assert total([1, 2]) == 4\n"
STEPS = [
    [{"name": "list_files", "arguments": {}}],
    [
        {
            "name": "write_file",
            "arguments": {"path": "calc.py", "content": "def total(xs):\n    return sum(xs)\n"},
        },
        {"name": "write_file", "arguments": {"path": "tests/test_calc.py", "content": FAILING}},
    ],
    [{"name": "run", "arguments": {"command": "python3 -m pytest -q tests"}}],
    [
        {
            "name": "write_file",
            "arguments": {"path": "tests/test_calc.py", "content": FAILING.replace("4", "3")},
        }
    ],
    [{"name": "run", "arguments": {"command": "python3 -m pytest -q tests"}}],
    [{"name": "finish", "arguments": {"summary": "calc.total, tested", "findings": []}}],
]


class Agent:
    """The fake model's side: the next step of the script, from how far the conversation is."""

    def __init__(self, output_tokens: int = 200, slow_step: int | None = None, slow_sec: float = 0.0):
        self.output_tokens = output_tokens
        self.slow_step = slow_step
        self.slow_sec = slow_sec

    def __call__(self, body: dict) -> Reply:
        step = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if step == self.slow_step:
            time.sleep(self.slow_sec)
        return Reply(tool_calls=STEPS[step], usage={"input_tokens": 100, "output_tokens": self.output_tokens})


@pytest.fixture
def keyed_workers(transactional_db, redis_server):
    running = Workers(env={KEY_ENV: "sk-fake-123", "OPENCLAW_OFFLINE": "0"}).start()
    yield running
    running.stop()


def configure(
    server: FakeLLMServer, *, output_per_mtok: float = 15.0, expected_output_tokens: int = 1500
) -> None:
    from executions.configuration import load_config

    load_config(
        {
            "parallel_execution": {
                "enabled": True,
                "pm": {"model": "offline"},
                "worker_pools": {
                    "codegen": {
                        "max_concurrent": 2,
                        "timeout_sec": 60,
                        "max_retries": 2,
                        "retry_backoff_sec": 0.1,
                        "model": "claude",
                        "max_turns": 12,
                        "expected_output_tokens": expected_output_tokens,
                    },
                },
            },
            "models": {
                "offline": {"provider": "offline", "model": "openclaw-offline-1", "options": {"plan": PLAN}},
                "claude": {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "base_url": server.anthropic_base_url,
                    "api_key_env": KEY_ENV,
                    "input_per_mtok": 3.0,
                    "output_per_mtok": output_per_mtok,
                },
            },
        },
        force=True,
    )


def usage_keys(attempt: Attempt) -> list[str]:
    return sorted(LedgerEntry.objects.filter(attempt=attempt).values_list("key", flat=True))


def test_the_agent_fixes_its_failing_test_and_every_turn_is_billed_once(keyed_workers, client_and_key):
    from executions.services import execution_create

    with FakeLLMServer(default_reply=Agent()) as server:
        configure(server)
        client, key = client_and_key
        execution = execution_create(client=client, message="A calculator module", session_key="loop")
        done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=90)
        requests = server.requests

    assert done.status == "completed", done.error
    assert len(requests) == len(STEPS)
    # The third call's conversation ends with the failing run's result: the model saw the failure.
    assert "1 failed" in str(requests[3].body["messages"][-1]["content"])
    attempt = Attempt.objects.get(task__execution=done)
    task = attempt.task
    assert task.result["tests"] == {"passed": 1, "failed": 0}
    assert [c["exit_code"] for c in task.result["commands"]] == [1, 0]
    assert task.result["turns"] == len(STEPS)
    assert {f["path"] for f in task.result["files"]} == {"calc.py", "tests/test_calc.py"}

    # One ledger entry and one transcript turn per model call, and the money agrees to the cent.
    assert usage_keys(attempt) == sorted(f"usage:{attempt.pk}:{n}" for n in range(1, len(STEPS) + 1))
    assert AttemptTurn.objects.filter(attempt=attempt).count() == len(STEPS)
    ledger_usage = sum(e.amount_usd for e in LedgerEntry.objects.filter(execution=done, kind="usage"))
    assert (
        ledger_usage
        == done.cost_usd
        == task.cost_usd
        + sum(e.amount_usd for e in LedgerEntry.objects.filter(execution=done, kind="usage", attempt=None))
    )
    assert attempt.tokens_out == 200 * len(STEPS) and attempt.cost_usd == task.cost_usd

    http = HttpClient()
    transcript = http.get(f"/api/execution/{done.pk}/tasks/task_1/attempts/1", HTTP_X_API_KEY=key).json()
    assert [t["number"] for t in transcript["turns"]] == list(range(1, len(STEPS) + 1))
    assert [c["name"] for c in transcript["turns"][2]["tool_calls"]] == ["run"]
    assert '"exit_code": 1' in transcript["turns"][2]["tool_results"][0]["content"]
    assert transcript["tests"] == {"passed": 1, "failed": 0}
    detail = http.get(f"/api/execution/{done.pk}", HTTP_X_API_KEY=key).json()
    assert detail["tasks"][0]["tests"] == {"passed": 1, "failed": 0}
    invoice = http.get(f"/api/execution/{done.pk}/invoice", HTTP_X_API_KEY=key).json()
    usage_lines = [line for line in invoice["lines"] if line["kind"] == "usage"]
    assert sum(Decimal(line["amount_usd"]) for line in usage_lines) == done.cost_usd
    assert (
        http.get(f"/api/execution/{done.pk}/tasks/task_1/attempts/2", HTTP_X_API_KEY=key).status_code == 404
    )


def test_the_budget_stops_the_loop_before_the_next_call(keyed_workers, client_and_key):
    from executions.services import execution_create

    # Each turn costs about $0.50 (1000 output tokens at $500/Mtok); the budget allows two, not a third.
    with FakeLLMServer(default_reply=Agent(output_tokens=1000)) as server:
        configure(server, output_per_mtok=500.0, expected_output_tokens=100)
        client, _ = client_and_key
        execution = execution_create(
            client=client, message="A calculator module", session_key="budget", budget_usd=Decimal("1.20")
        )
        done = wait_for_status(
            execution.pk, {"completed", "partial", "failed", "budget_exceeded"}, timeout=90
        )
        requests = server.requests

    assert done.status == "budget_exceeded"
    assert len(requests) == 2  # no call after the budget said no
    attempt = Attempt.objects.get(task__execution=done)
    assert attempt.status == "cancelled" and attempt.task.stop_reason == "budget"
    assert usage_keys(attempt) == [f"usage:{attempt.pk}:1", f"usage:{attempt.pk}:2"]
    # Two turns of 100 input tokens at $3/Mtok and 1000 output tokens at $500/Mtok.
    assert attempt.cost_usd == 2 * Decimal("0.500300")
    assert done.cost_usd == sum(
        e.amount_usd for e in LedgerEntry.objects.filter(execution=done, kind="usage")
    )


def test_a_cancel_stops_the_agent_within_a_turn(keyed_workers, client_and_key):
    from executions.services import execution_cancel, execution_create

    with FakeLLMServer(default_reply=Agent(slow_step=2, slow_sec=2.0)) as server:
        configure(server)
        client, _ = client_and_key
        execution = execution_create(client=client, message="A calculator module", session_key="cancel")
        deadline = time.monotonic() + 60
        while not LedgerEntry.objects.filter(execution=execution, key__endswith=":2").exists():
            assert time.monotonic() < deadline, "the agent never finished its second turn"
            time.sleep(0.05)
        execution_cancel(Execution.objects.get(pk=execution.pk))
        attempt = Attempt.objects.get(task__execution=execution)
        # The third call was in flight: its tokens were spent, so it is billed (late), and no fourth follows.
        while not LedgerEntry.objects.filter(key=f"usage:{attempt.pk}:3").exists():
            assert time.monotonic() < deadline, "the in-flight turn was never billed"
            time.sleep(0.05)
        requests = server.requests

    done = Execution.objects.get(pk=execution.pk)
    assert done.status == "cancelled"
    assert len(requests) == 3
    assert usage_keys(attempt) == [f"usage:{attempt.pk}:{n}" for n in (1, 2, 3)]


@pytest.mark.faults
def test_a_worker_killed_mid_loop_is_retried_and_no_turn_is_billed_twice(
    transactional_db, redis_server, client_and_key
):
    from executions.services import execution_create

    workers = Workers(env={KEY_ENV: "sk-fake-123", "OPENCLAW_OFFLINE": "0"}).start()
    try:
        with FakeLLMServer(default_reply=Agent(slow_step=3, slow_sec=1.0)) as server:
            configure(server)
            client, _ = client_and_key
            execution = execution_create(client=client, message="A calculator module", session_key="kill")
            deadline = time.monotonic() + 60
            while not LedgerEntry.objects.filter(execution=execution, key__endswith=":3").exists():
                assert time.monotonic() < deadline, "the agent never reached its third turn"
                time.sleep(0.05)
            workers.kill_workers()
            workers.start_workers()
            done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=90)
    finally:
        workers.stop()

    assert done.status == "completed", done.error
    first, second = Attempt.objects.filter(task__execution=done).order_by("number")
    assert first.status == "lost" and second.status == "succeeded"
    assert usage_keys(first) == [f"usage:{first.pk}:{n}" for n in (1, 2, 3)]
    assert usage_keys(second) == sorted(f"usage:{second.pk}:{n}" for n in range(1, len(STEPS) + 1))
    ledger_usage = sum(e.amount_usd for e in LedgerEntry.objects.filter(execution=done, kind="usage"))
    assert ledger_usage == done.cost_usd
