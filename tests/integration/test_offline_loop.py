"""The demo without any key: the offline agents work in their tool loop on real workers, run the
tests they wrote in the real sandbox, and fix the one that fails (option flaws: failing_test)."""

from executions.models import Attempt, AttemptTurn, LedgerEntry, Task
from executions.services import execution_create
from pools import sandbox
from tests.conftest import configure, wait_for_status

RESTAURANT = "Build a restaurant website with online booking and secure payments"


def test_the_restaurant_request_with_offline_agents_in_their_loop(workers, client_and_key):
    available, reason = sandbox.availability()
    assert available, reason  # CI installs bubblewrap
    configure(latency=0.3, max_turns=16, options={"flaws": ["failing_test"]})
    execution = execution_create(client=client_and_key[0], message=RESTAURANT, session_key="loop")
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=90)
    assert done.status == "completed", done.final_response

    tasks = {t.key: t for t in Task.objects.filter(execution=done, kind="plan")}
    codegen = [t for t in tasks.values() if t.role == "codegen"]
    assert codegen
    for task in codegen:
        # The first run failed on the test's own mistake, the fix ran green.
        assert [c["exit_code"] for c in task.result["commands"]] == [1, 0], task.result["commands"]
        [owned] = done.contract["ownership"][task.key]
        # Its folder's suite: the backend's holds the validation tests too.
        assert task.result["tests"] == {"passed": 5 if owned == "backend" else 2, "failed": 0}
        assert task.result["turns"] == 5
        # Its test lives in the folder the contract gives the task.
        assert f"{owned}/tests/test_{owned}_files.py" in {f["path"] for f in task.result["files"]}
    audit = next(t for t in tasks.values() if t.role == "security")
    first_turn = AttemptTurn.objects.get(attempt__task=audit, number=1)
    assert [c["name"] for c in first_turn.tool_calls] == ["list_files"]
    assert "backend/app/main.py" in first_turn.tool_results[0]["content"]  # the code it audits is there
    # Every turn of every attempt billed once, and the totals agree.
    for attempt in Attempt.objects.filter(task__execution=done):
        keys = set(LedgerEntry.objects.filter(attempt=attempt).values_list("key", flat=True))
        assert keys == {f"usage:{attempt.pk}:{n}" for n in range(1, attempt.turns.count() + 1)}
    ledger = sum(e.amount_usd for e in LedgerEntry.objects.filter(execution=done, kind="usage"))
    assert ledger == done.cost_usd > 0


def test_a_pool_with_one_turn_answers_in_a_single_reply(workers, client_and_key):
    configure(latency=0.1, max_turns=1)
    execution = execution_create(client=client_and_key[0], message=RESTAURANT, session_key="single")
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=60)
    assert done.status == "completed"
    for attempt in Attempt.objects.filter(task__execution=done):
        assert list(attempt.turns.values_list("number", "tool_calls")) == [(1, [])]
        assert "commands" not in attempt.task.result


def test_the_seeds_other_demo_requests_complete_without_a_key(workers, client_and_key):
    """Each task builds the part its own words name, not one the quoted request mentions: the
    backend task of "REST API + frontend + …" writes the backend, so its files are its own."""
    configure(latency=0.05, max_turns=1)
    requests = ["REST API + frontend + security audit", "Full website + backend + audit + database"]
    executions = [
        execution_create(client=client_and_key[0], message=message, session_key=f"demo-{n}")
        for n, message in enumerate(requests)
    ]
    for execution in executions:
        done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=90)
        assert done.status == "completed", done.final_response
        assert not Task.objects.filter(execution=done).exclude(kind="plan").exists()  # no fix round
        paths = {
            f["path"] for t in Task.objects.filter(execution=done, role="codegen") for f in t.result["files"]
        }
        assert any(p.startswith("backend/") for p in paths) and any(p.startswith("frontend/") for p in paths)


def test_offline_agents_keep_to_the_folders_the_contract_gives_them(workers, client_and_key):
    """Two frontends, two schemas and two backends in one plan: the contract gives `frontend`,
    `database` and `backend` to the first of each and `src/<task>` to the second, whose files and
    tests go there: no fix round, every contract check passes, and so does the integration gate
    (the second backend's tests import its `app` from its own folder)."""

    def task(key: str, pool: str, description: str) -> dict:
        return {"id": key, "pool": pool, "description": description, "priority": 1, "timeout_sec": 60}

    plan = {
        "tasks": [
            task("t1", "codegen", "Next.js frontend pages"),
            task("t2", "codegen", "Next.js frontend pages for admins"),
            task("t3", "database", "Database schema"),
            task("t4", "database", "Database schema for reporting"),
            task("t5", "codegen", "FastAPI backend for the menu"),
            task("t6", "codegen", "FastAPI backend for admins"),
        ]
    }
    configure(latency=0.05, max_turns=16, options={"plan": plan})
    execution = execution_create(client=client_and_key[0], message="Menu items", session_key="owned")
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=90)

    assert done.status == "completed", done.final_response
    assert done.contract["ownership"] == {
        "t1": ["frontend"],
        "t2": ["src/t2"],
        "t3": ["database"],
        "t4": ["src/t4"],
        "t5": ["backend"],
        "t6": ["src/t6"],
    }
    assert not Task.objects.filter(execution=done).exclude(kind="plan").exists()  # no fix round
    assert done.contract_report["failed"] == 0 and done.contract_report["passed"] > 0
    files = {t.key: {f["path"] for f in t.result["files"]} for t in Task.objects.filter(execution=done)}
    assert "frontend/package.json" in files["t1"] and "src/t2/package.json" in files["t2"]
    assert "src/t2/tests/test_src_t2_files.py" in files["t2"]  # its own test, run green in its folder
    assert Task.objects.get(execution=done, key="t2").result["tests"] == {"passed": 2, "failed": 0}
    assert files["t3"] == {"database/schema.sql"} and files["t4"] == {"src/t4/schema.sql"}
    assert {"src/t6/app/main.py", "src/t6/tests/test_validation.py", "src/t6/conftest.py"} <= files["t6"]
    assert done.integration["ok"] and done.integration["failed"] == 0, done.integration
