"""A follow-up that adds fields to a record: read from the request, declared in the contract over
the table the project has, written as a migration, applied once by the backend to a database made
before, and checked against the schema the task started from."""

import importlib.util
import json
import sqlite3

import pytest

from executions.pm_coordinator import PoolLimits, deterministic_plan, layers_to_grow
from executions.result_aggregator import verification_summary
from pools import offline
from pools.contracts.check import check_tree
from pools.contracts.contract import amend
from pools.contracts.derive import added_fields, contract_for
from pools.verification import verify_output
from pools.verifiers.schema import check_migrations

RESTAURANT = "Build a restaurant website with online booking and secure payments"
PHONE = "Add a phone number field to bookings"
AREAS = {"task_1": "frontend", "task_2": "backend", "task_3": "database"}
POOLS = {
    "codegen": PoolLimits(300, role="codegen"),
    "security": PoolLimits(300, role="security"),
    "database": PoolLimits(300, role="database"),
}


@pytest.mark.parametrize(
    "request_text, expected",
    [
        (PHONE, ("bookings", {"phone": "TEXT"})),
        ("Add phone and email fields to the booking form", ("bookings", {"phone": "TEXT", "email": "TEXT"})),
        (
            "Add a phone number, an email address and special requests to bookings",
            ("bookings", {"phone": "TEXT", "email": "TEXT", "special_requests": "TEXT"}),
        ),
        ("Add a notes column to orders", ("orders", {"notes": "TEXT"})),
        ("Add a deposit to bookings.", ("bookings", {"deposit_cents": "INTEGER"})),
        ("add a table number to bookings", ("bookings", {"table_number": "INTEGER"})),
        ("Add a due date to todos", ("todos", {"due_date": "TIMESTAMPTZ"})),
        ("Add a photo url to listings", ("listings", {"photo_url": "TEXT"})),
        ("Add a message field to bookings", ("bookings", {"message": "TEXT"})),
    ],
)
def test_the_fields_a_request_adds_and_their_record(request_text, expected):
    assert added_fields(request_text) == expected


@pytest.mark.parametrize(
    "request_text, table, without_the_projects_tables",
    [
        ("Add a rating to books to read", "books_to_read", None),
        ("Add a rating to each application", "applications", None),
        ("Add a rating field to menu items", "menu_items", None),
        ("Add a rating to the cards page", "cards", None),
        # The only table whose name ends so; no project's table, an event's tickets.
        ("Add a rating field to each ticket", "support_tickets", "tickets"),
    ],
)
def test_a_record_is_named_by_the_projects_table_in_words(request_text, table, without_the_projects_tables):
    tables = ["books_to_read", "applications", "menu_items", "cards", "support_tickets"]
    assert added_fields(request_text, tables) == (table, {"rating": "INTEGER"})
    named = added_fields(request_text)
    assert (named and named[0]) == without_the_projects_tables


def test_a_record_named_by_last_words_shared_by_two_tables_is_neither():
    # "items": a grocery list's list_items or a restaurant's menu_items
    assert added_fields("Add a quantity to the items", ["list_items", "menu_items"]) is None
    assert added_fields("Add a quantity to the items", ["list_items"]) == (
        "list_items",
        {"quantity": "INTEGER"},
    )


@pytest.mark.parametrize(
    "request_text",
    [
        "Add reviews to the restaurant site",  # a kind of record
        "Add reviews to products",
        "Add a message to bookings",  # "message" names records, unless it is called a field
        "Add a dark mode toggle to the app",  # no record
        "Add an FAQ page to the website",
        "Add user authentication to the backend",
        "Add payments to the booking flow",
        "Add an order field to bookings",  # SQL's own word
        "Add a description to products and a photo to listings",  # two records
        RESTAURANT,
        "Add " + ", ".join(f"field{i}" for i in range(7)) + " to bookings",  # more than six
        "Add a '); DROP TABLE bookings; -- field to bookings",
    ],
)
def test_what_adds_no_field(request_text):
    assert added_fields(request_text) is None


def test_the_contract_declares_the_projects_table_with_its_columns_and_the_new_nullable_field():
    stored = contract_for(RESTAURANT, AREAS)
    # A model's contract may have named the table's columns otherwise: they are kept.
    stored["tables"] = [
        {**t, "columns": {**t["columns"], "table_no": "INTEGER NOT NULL"}} if t["name"] == "bookings" else t
        for t in stored["tables"]
    ]
    amendment = contract_for("Add a notes column to bookings", AREAS, follow_up=True, stored=stored)

    assert [t["name"] for t in amendment["tables"]] == ["users", "bookings"]  # not a `notes` table
    bookings = amendment["tables"][1]["columns"]
    assert bookings["table_no"] == "INTEGER NOT NULL" and bookings["notes"] == "TEXT"
    [post] = [e for e in amendment["endpoints"] if e["method"] == "POST"]
    assert post["path"] == "/api/bookings" and post["request"]["notes"] == "string"

    again = contract_for("Add a notes column to bookings", AREAS, follow_up=True, stored=amendment)
    assert again["tables"][1]["columns"] == bookings  # there already: unchanged


def test_a_field_follow_up_reaches_every_layer_the_project_has():
    stored = contract_for(RESTAURANT, AREAS)
    files = [("frontend/pages/bookings.tsx", 1), ("backend/app/main.py", 1), ("database/schema.sql", 1)]
    layers = layers_to_grow(PHONE, files, stored)
    assert layers == {"frontend", "backend", "database"}
    plan = deterministic_plan(PHONE, POOLS, layers)
    assert [(t["pool"], t["description"].split(":")[0]) for t in plan] == [
        ("codegen", "Build Next.js frontend"),
        ("codegen", "Build FastAPI backend with API endpoints"),
        ("database", "Design database schema with indexes"),
    ]
    # The backend's tests run on the database the migration makes: it waits for the schema's task.
    frontend, backend, database = plan
    assert backend["blocked_by"] == [database["id"]] and backend["soft_deps"] == []
    assert frontend["soft_deps"] == [backend["id"]]
    new_project = deterministic_plan(RESTAURANT, POOLS)
    assert [t["blocked_by"] for t in new_project[:2]] == [[], []]  # in parallel: no schema to wait for
    assert layers_to_grow(PHONE, files[1:], stored) == {"backend", "database"}
    assert layers_to_grow("Add a dark mode toggle to the app", files, stored) == frozenset()


def write(folder, files) -> dict[str, str]:
    for item in files:
        path = folder / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    return {item["path"]: item["content"] for item in files}


def first_version(folder) -> dict[str, str]:
    """The project's first files: a restaurant's backend and schema (`contract.json`: its contract)."""
    contract = contract_for(RESTAURANT, AREAS)
    meta = {"request": RESTAURANT, "contract": contract}
    files = write(
        folder,
        [
            *offline.codegen({**meta, "description": f"Build FastAPI backend: {RESTAURANT}"}, set())["files"],
            *offline.schema(meta, set())["files"],
        ],
    )
    return {**files, "contract.json": json.dumps(contract)}


def follow_up(folder, request: str, before: dict[str, str]) -> dict:
    """A follow-up's agents on the project's contract amended by its plan, their files written over
    `before` (the project's files as the tasks start)."""
    stored = json.loads(before["contract.json"])
    contract = amend(stored, contract_for(request, AREAS, follow_up=True, stored=stored))
    meta = {"request": request, "contract": contract, "follow_up": True}
    sql = {p: t for p, t in before.items() if p.endswith(".sql")}
    database = offline.schema(
        {**meta, "existing_sql": sql, "description": f"Design schema: {request}"}, set()
    )
    backend = offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())
    frontend = offline.codegen({**meta, "description": f"Build Next.js frontend: {request}"}, set())
    written = write(folder, database["files"] + backend["files"] + frontend["files"])
    after = {**before, **written, "contract.json": json.dumps(contract)}
    return {
        "database": database,
        "backend": backend,
        "frontend": frontend,
        "contract": contract,
        "after": after,
    }


def load_db_module(folder, name: str):
    spec = importlib.util.spec_from_file_location(name, folder / "backend/app/db.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def columns(path, table: str) -> list[str]:
    return [row[1] for row in sqlite3.connect(path).execute(f"PRAGMA table_info({table})")]


def test_the_schema_agent_writes_the_migration_after_the_last_one_and_none_when_nothing_is_new(tmp_path):
    phone_done = follow_up(tmp_path, PHONE, first_version(tmp_path))
    phone = phone_done["database"]

    paths = [f["path"] for f in phone["files"]]
    assert paths == ["database/schema.sql", "database/migrations/0001_bookings_phone.sql"]
    migration = phone["files"][1]["content"]
    assert "ALTER TABLE bookings ADD COLUMN phone TEXT;" in migration
    assert "phone TEXT" in phone["files"][0]["content"]  # a new database gets it from the schema
    assert "Migration 0001_bookings_phone.sql: adds bookings.phone." in phone["summary"]

    notes = follow_up(tmp_path, "Add a notes column to payments", phone_done["after"])
    assert [f["path"] for f in notes["database"]["files"]][1] == "database/migrations/0002_payments_notes.sql"

    again = follow_up(tmp_path, PHONE, notes["after"])["database"]
    assert [f["path"] for f in again["files"]] == ["database/schema.sql"]  # nothing to migrate


def test_the_backend_migrates_a_database_made_before_once_and_a_new_one_needs_no_migration(
    tmp_path, monkeypatch
):
    before = first_version(tmp_path)
    old_db = tmp_path / "old.db"
    monkeypatch.setenv("DATABASE_PATH", str(old_db))
    load_db_module(tmp_path, "db_v1").connect().close()
    with sqlite3.connect(old_db) as db:
        db.execute(
            "INSERT INTO bookings (user_id, name, party_size, starts_at) VALUES (1, 'Ada', 2, '2026-06-01')"
        )
    assert "phone" not in columns(old_db, "bookings")

    follow_up(tmp_path, PHONE, before)
    # A table that is new since the old database was made, and a later migration adding to it.
    schema = tmp_path / "database/schema.sql"
    schema.write_text(schema.read_text() + "\nCREATE TABLE tables (id SERIAL PRIMARY KEY, seats INTEGER);\n")
    (tmp_path / "database/migrations/0002_tables_zone.sql").write_text(
        "ALTER TABLE tables ADD COLUMN zone TEXT;\n"
    )
    schema.write_text(schema.read_text().replace("seats INTEGER)", "seats INTEGER, zone TEXT)"))

    v2 = load_db_module(tmp_path, "db_v2")
    v2.connect().close()
    v2._made.clear()
    v2.connect().close()  # a second start: nothing applied twice

    assert columns(old_db, "bookings")[-1] == "phone" and columns(old_db, "tables") == ["id", "seats", "zone"]
    with sqlite3.connect(old_db) as db:
        assert db.execute("SELECT name, phone FROM bookings").fetchall() == [("Ada", None)]  # kept
        assert db.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall() == [
            ("0001_bookings_phone.sql",),
            ("0002_tables_zone.sql",),
        ]

    new_db = tmp_path / "new.db"
    monkeypatch.setenv("DATABASE_PATH", str(new_db))
    v2.connect().close()  # made from today's schema: the migrations are only recorded
    assert "phone" in columns(new_db, "bookings")
    assert sqlite3.connect(new_db).execute("SELECT count(*) FROM schema_migrations").fetchone() == (2,)


def test_the_new_field_is_optional_in_the_backend_and_the_form(tmp_path):
    done = follow_up(tmp_path, "Add a phone number and an email to bookings", first_version(tmp_path))

    main = (tmp_path / "backend/app/main.py").read_text()
    assert "missing_fields(item, ['name', 'party_size', 'starts_at'])" in main  # the fields it had
    assert 'item["starts_at"], item.get("phone"), item.get("email")' in main
    assert "SELECT id, name, party_size, starts_at, phone, email FROM bookings" in main
    page = (tmp_path / "frontend/pages/bookings.tsx").read_text()
    assert '<input name="phone" type="tel" placeholder="phone" />' in page
    assert '<input name="email" type="email" placeholder="email" />' in page
    assert '<input name="name" type="text" placeholder="name" required />' in page
    assert done["backend"]["summary"].startswith(
        "POST /api/bookings takes phone, email (optional) and GET /api/bookings lists them"
    )
    assert done["frontend"]["summary"].startswith("The bookings page's form and list show phone, email")
    migration = [f["path"] for f in done["database"]["files"]][1]
    assert migration == "database/migrations/0001_bookings_phone_email.sql"
    api_test = (tmp_path / "backend/tests/test_api.py").read_text()
    assert "'phone': 'bookings phone from the test'" in api_test  # posted, and listed back


def test_the_contract_checks_accept_the_backends_own_migrations_ledger(tmp_path):
    done = follow_up(tmp_path, PHONE, first_version(tmp_path))
    files = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    report = check_tree(done["contract"], files, {}, {})
    assert report.mismatches == [] and report.passed == report.checks > 0


def test_migrations_are_checked_against_the_schema_the_task_started_from(tmp_path):
    before = first_version(tmp_path)
    phone = follow_up(tmp_path, PHONE, before)["database"]
    schema = phone["files"][0]

    good = verify_output("database", phone, [], before)
    assert good["verification"]["schema_accepted"] is True
    [report] = good["verification"]["migrations"].values()
    assert report["applied"] and report["missing"] == []
    assert report["migrations"] == ["database/migrations/0001_bookings_phone.sql"]
    assert "1 migration applied to the schema before it" in verification_summary(
        [type("T", (), {"status": "succeeded", "result": good})()]
    )

    wrong_column = {
        "path": "database/migrations/0001_x.sql",
        "content": "ALTER TABLE bookings ADD COLUMN fone TEXT;",
    }
    result = verify_output("database", {"summary": "s", "files": [schema, wrong_column]}, [], before)
    assert result["verification"]["schema_accepted"] is False
    assert ("high", "migration-incomplete") in {(f["severity"], f["rule"]) for f in result["findings"]}

    no_table = {
        "path": "database/migrations/0001_x.sql",
        "content": "ALTER TABLE nope ADD COLUMN phone TEXT;",
    }
    result = verify_output("database", {"summary": "s", "files": [schema, no_table]}, [], before)
    assert result["verification"]["schema_accepted"] is False
    [finding] = [f for f in result["findings"] if f["rule"] == "migration-apply"]
    assert "no such table: nope" in finding["title"]

    # The schema alone, with no migration: accepted, but a database made before lacks the column.
    result = verify_output("database", {"summary": "s", "files": [schema]}, [], before)
    assert result["verification"]["schema_accepted"] is True
    [finding] = [f for f in result["findings"] if f["rule"] == "migration-missing"]
    assert finding["severity"] == "medium" and "bookings.phone" in finding["title"]

    # A new project has no schema to migrate from.
    assert check_migrations({f["path"]: f["content"] for f in phone["files"]}, {}) == {}


def test_a_second_migration_is_checked_against_the_schema_the_first_one_brought(tmp_path):
    # The schema the second follow-up starts from has the first one's column already, as a database
    # made from it does: the first migration is not applied again (it would add the column twice).
    phone = follow_up(tmp_path, PHONE, first_version(tmp_path))
    login = follow_up(tmp_path, "Add user login so that guests see only their own bookings", phone["after"])

    result = verify_output("database", login["database"], [], phone["after"])

    assert result["verification"]["schema_accepted"] is True, result["findings"]
    [report] = result["verification"]["migrations"].values()
    assert report["migrations"] == ["database/migrations/0002_users_password_hash.sql"]
    assert report["applied"] and report["missing"] == []


def test_a_table_the_code_makes_is_checked_when_the_schema_or_contract_has_it():
    contract = contract_for(RESTAURANT, AREAS)
    code = (
        'def setup(db):\n    db.execute("CREATE TABLE IF NOT EXISTS bookings (id INTEGER, fone TEXT)")\n'
        '    db.execute("CREATE TABLE IF NOT EXISTS audit_log (id INTEGER, what TEXT)")\n\n\n'
        'def listed(db):\n    return db.execute("SELECT fone FROM bookings").fetchall()\n\n\n'
        'def logged(db):\n    return db.execute("SELECT what FROM audit_log").fetchall()\n'
    )
    files = {
        "backend/app/store.py": code,
        **{f["path"]: f["content"] for f in offline.schema({"contract": contract}, set())["files"]},
    }
    found = [(m.check, m.found) for m in check_tree(contract, files, {}, {}).mismatches]
    assert [check for check, text in found if "fone" in text] == ["sql-column"]  # the schema's table: checked
    assert not [text for _, text in found if "audit_log" in text]  # the code's own ledger
