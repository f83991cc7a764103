"""A generated project with accounts runs its own tests in the real sandbox, as the integration gate
runs them: they pass, and they fail when the backend stops keeping users' records apart (in a list
or a delete) or keeps a password as it was sent."""

import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from pools import offline, sandbox
from pools.contracts.derive import contract_for

TODO = "Build a todo list app where users can sign up, log in and share lists with friends"
AREAS = {"task_1": "frontend", "task_2": "backend", "task_3": "database"}

pytestmark = pytest.mark.skipif(
    not sandbox.availability()[0] and not os.environ.get("CI"),
    reason=f"no sandbox here: {sandbox.availability()[1]}",
)


@pytest.fixture
def project() -> Path:
    """The project's backend and schema, in a folder under var/ the sandbox's user can reach."""
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    meta = {"request": TODO, "contract": contract_for(TODO, AREAS)}
    files = [
        *offline.codegen({**meta, "description": f"Build FastAPI backend: {TODO}"}, set())["files"],
        *offline.schema(meta, set())["files"],
    ]
    for item in files:
        path = folder / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    yield folder
    shutil.rmtree(folder)


def backend_tests(project: Path) -> sandbox.RunResult:
    return sandbox.run(project, "cd backend && python -m pytest -q -p no:cacheprovider", timeout_sec=60)


def test_the_generated_backend_passes_its_own_tests_of_accounts(project):
    result = backend_tests(project)

    assert result.exit_code == 0, result.output
    # 8 of accounts; 6 of the API, signed in (todos and lists posted, refused incomplete, deleted);
    # 3 of validation
    assert "17 passed" in result.output


def test_its_tests_fail_when_one_user_sees_anothers_records(project):
    main = project / "backend/app/main.py"
    main.write_text(
        main.read_text()
        .replace(" WHERE user_id = ? ORDER BY", " ORDER BY")
        .replace("db.execute(query, (user,))", "db.execute(query)")
    )

    result = backend_tests(project)

    assert result.exit_code == 1, result.output
    assert "FAILED tests/test_accounts.py::test_a_user_sees_only_their_own_records" in result.output


def test_its_tests_fail_when_one_user_deletes_anothers_record(project):
    main = project / "backend/app/main.py"
    main.write_text(main.read_text().replace(" AND user_id = ?", "").replace("(item_id, user)", "(item_id,)"))

    result = backend_tests(project)

    assert result.exit_code == 1, result.output
    assert "FAILED tests/test_accounts.py::test_a_user_deletes_only_their_own_records" in result.output


def test_its_tests_fail_when_a_password_is_kept_as_sent(project):
    accounts = project / "backend/app/accounts.py"
    accounts.write_text(accounts.read_text().replace("(email, hash_password(password))", "(email, password)"))

    result = backend_tests(project)

    assert result.exit_code == 1, result.output
    assert "FAILED tests/test_accounts.py::test_neither_password_nor_token_is_stored_as_sent" in result.output
