"""A generated project with accounts runs its own tests in the real sandbox, as the integration gate
runs them: they pass, and they fail when the backend stops keeping users' records apart (in a list,
a change or a delete), lets a value no column holds (NaN and an infinity too) reach the database,
or keeps a password as it was sent; and a field given null in a change is cleared."""

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from pools import offline, sandbox
from pools.contracts.contract import amend
from pools.contracts.derive import contract_for

SHARED_LISTS_APP = "Build a todo list app where users can sign up, log in and share lists with friends"
AREAS = {"task_1": "frontend", "task_2": "backend", "task_3": "database"}

pytestmark = pytest.mark.skipif(
    not sandbox.availability()[0] and not os.environ.get("CI"),
    reason=f"no sandbox here: {sandbox.availability()[1]}",
)


@pytest.fixture
def project() -> Path:
    """The project's backend and schema, in a folder under var/ the sandbox's user can reach."""
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    meta = {"request": SHARED_LISTS_APP, "contract": contract_for(SHARED_LISTS_APP, AREAS)}
    files = [
        *offline.codegen({**meta, "description": f"Build FastAPI backend: {SHARED_LISTS_APP}"}, set())[
            "files"
        ],
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
    # 10 of accounts; 15 of the API, signed in (todos and lists posted, refused incomplete, refused
    # a value no column holds or a text too long, changed, a todo's due date cleared, deleted; todos'
    # done listed as true or false, listed a page at a time, searched by name); 3 of validation
    assert "28 passed" in result.output


# Mutations of the generated backend, each (file, [(text, what replaces it)…]), and the generated
# test that fails on it.
MUTATIONS = {
    "one user sees another's records": (
        "main.py",
        [
            (" WHERE user_id = ? ORDER BY", " ORDER BY"),
            ("db.execute(query, (user, PAGE, offset))", "db.execute(query, (PAGE, offset))"),
        ],
        "test_accounts.py::test_a_user_sees_only_their_own_records",
    ),
    "one user deletes another's record": (
        "main.py",
        [
            (
                'DELETE FROM todos WHERE id = ? AND user_id = ?", (item_id, user)',
                'DELETE FROM todos WHERE id = ?", (item_id,)',
            )
        ],
        "test_accounts.py::test_a_user_deletes_only_their_own_records",
    ),
    "one user changes another's record": (
        "main.py",
        [
            ('ELSE done END WHERE id = ? AND user_id = ?",', 'ELSE done END WHERE id = ?",'),
            ('item.get("done"), item_id, user)', 'item.get("done"), item_id)'),
        ],
        "test_accounts.py::test_a_user_changes_only_their_own_records",
    ),
    "a value no column holds reaches the database": (
        "main.py",
        [("unfit = unfit_fields(item, ", "unfit = [] or (item, ")],
        "test_api.py::test_a_value_no_column_holds_is_refused[todos]",
    ),
    "NaN or an infinity reaches the database": (
        "validation.py",
        [("return math.isfinite(value)", "return True")],
        "test_api.py::test_a_value_no_column_holds_is_refused[todos]",
    ),
    "a text of any length is stored": (
        "main.py",
        [("long = too_long(item, ", "long = [] or (item, ")],
        "test_api.py::test_a_text_of_more_than_ten_thousand_characters_is_refused",
    ),
    "a search's % or _ is a wildcard": (
        "main.py",
        [('.replace("%", "!%").replace("_", "!_")', "")],
        "test_api.py::test_a_search_takes_percent_and_underscore_as_typed",
    ),
    "a search finds another user's records": (
        "main.py",
        [("WHERE user_id = ? AND name LIKE", "WHERE ? > 0 AND name LIKE")],
        "test_accounts.py::test_a_user_sees_only_their_own_records",
    ),
    "a password is kept as sent": (
        "accounts.py",
        [("(email, hash_password(password))", "(email, password)")],
        "test_accounts.py::test_neither_password_nor_token_is_stored_as_sent",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_its_tests_fail_when(project, mutation):
    name, replacements, caught = MUTATIONS[mutation]
    module = project / "backend/app" / name
    source = module.read_text()
    for text, replacement in replacements:
        assert text in source, text
        source = source.replace(text, replacement)
    module.write_text(source)

    result = backend_tests(project)

    assert result.exit_code == 1, result.output
    assert f"FAILED tests/{caught}" in result.output


RESTAURANT = "Build a restaurant website with online booking and secure payments"
LOGIN = "Add user login so that guests see only their own bookings"
BEFORE = """\
from fastapi.testclient import TestClient
from app.main import app
booking = {"name": "Grace", "party_size": 4, "starts_at": "2026-12-24T20:00"}
print(TestClient(app).post("/api/bookings", json=booking).status_code)
"""
AFTER = """\
import json, sqlite3
from fastapi.testclient import TestClient
from app.main import app
client = TestClient(app)
account = {"email": "ada@example.com", "password": "ada's password"}
ada = {"Authorization": "Bearer " + client.post("/api/signup", json=account).json()["token"]}
listed = client.get("/api/bookings", headers=ada).json()
rows = sqlite3.connect("../app.db").execute("SELECT name, user_id FROM bookings").fetchall()
me = client.get("/api/me", headers=ada).json()
print(json.dumps({"listed": listed, "rows": rows, "me": me}))
"""


def write(folder: Path, files: list[dict]) -> None:
    for item in files:
        path = folder / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])


def restaurant_then(folder: Path, request: str, after: str) -> sandbox.RunResult:
    """A restaurant's backend and schema, made without accounts, take Grace's booking (`BEFORE`);
    then the follow-up `request`'s schema and backend land on the same folder and database, and
    the script `after` runs there."""
    stored = contract_for(RESTAURANT, AREAS)
    meta = {"request": RESTAURANT, "contract": stored}
    write(
        folder,
        offline.codegen({**meta, "description": f"Build FastAPI backend: {RESTAURANT}"}, set())["files"],
    )
    write(folder, offline.schema(meta, set())["files"])
    (folder / "before.py").write_text(BEFORE)
    made = sandbox.run(
        folder, "cd backend && PYTHONPATH=. DATABASE_PATH=../app.db python ../before.py", timeout_sec=60
    )
    assert made.output.strip().endswith("200"), made.output

    contract = amend(stored, contract_for(request, AREAS, follow_up=True, stored=stored))
    meta = {"request": request, "contract": contract, "follow_up": True}
    sql = {"database/schema.sql": (folder / "database/schema.sql").read_text()}
    write(folder, offline.schema({**meta, "existing_sql": sql}, set())["files"])
    write(
        folder, offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())["files"]
    )
    (folder / "after.py").write_text(after)
    return sandbox.run(
        folder, "cd backend && PYTHONPATH=. DATABASE_PATH=../app.db python ../after.py", timeout_sec=60
    )


def test_a_follow_up_adding_accounts_gives_the_rows_made_before_to_no_one():
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    try:
        after = restaurant_then(folder, LOGIN, AFTER)

        assert after.exit_code == 0, after.output
        seen = json.loads(after.output.strip().splitlines()[-1])
        # Ada is the first account, user 1, as the placeholder user of the rows before was: Grace's
        # booking is kept, and no one's.
        assert seen == {"listed": [], "rows": [["Grace", 0]], "me": {"id": 1, "email": "ada@example.com"}}
        assert backend_tests(folder).exit_code == 0
    finally:
        shutil.rmtree(folder)


def test_a_field_given_null_is_cleared_and_its_test_fails_when_null_keeps_it(project):
    # A todo's due date is optional: a PATCH giving it null clears it (a JSON merge patch).
    verbose = "cd backend && python -m pytest -q -rA -p no:cacheprovider tests/test_api.py"

    passed = sandbox.run(project, verbose, timeout_sec=60)
    assert passed.exit_code == 0, passed.output
    assert "PASSED tests/test_api.py::test_an_optional_field_given_null_is_cleared[todos]" in passed.output

    main = project / "backend/app/main.py"
    given = '"due_at" in item, item.get("due_at")'
    assert given in main.read_text()
    main.write_text(main.read_text().replace(given, 'item.get("due_at") is not None, item.get("due_at")'))
    failed = sandbox.run(project, verbose, timeout_sec=60)
    assert failed.exit_code == 1, failed.output
    assert "FAILED tests/test_api.py::test_an_optional_field_given_null_is_cleared[todos]" in failed.output
