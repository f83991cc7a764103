"""The contract checks of a merged tree, and how their conflicts and the gate decide an execution."""

from decimal import Decimal

import pytest

from executions.interfaces import group_mismatches, lineage_trees, review, settle
from executions.models import Conflict, Event, Execution, Project, Task
from executions.states import ExecutionStatus, TaskStatus
from pools import sandbox
from pools.contracts.check import check_tree
from tests.conftest import configure
from tests.factories import make_client, make_execution

CONTRACT = {
    "endpoints": [
        {"method": "GET", "path": "/api/bookings", "request": {}, "response": {}},
        {"method": "POST", "path": "/api/bookings", "request": {}, "response": {}},
    ],
    "tables": [{"name": "bookings", "columns": {"id": "SERIAL", "party_size": "INTEGER"}}],
    "ownership": {"web": ["frontend"], "api": ["backend"], "db": ["database"]},
}
BACKEND = (
    "from fastapi import APIRouter, FastAPI\napp = FastAPI()\nrouter = APIRouter(prefix='/api')\n\n"
    "@router.get('/bookings')\ndef list_bookings(db):\n"
    "    return db.execute('SELECT id, party_size FROM bookings').fetchall()\n\n"
    "@router.post('/bookings')\ndef add(db, size):\n"
    "    db.execute(f'INSERT INTO bookings (party_size, notes) VALUES ({size}, 1)')\n\n"
    "app.include_router(router)\n"
)
FRONTEND = (
    "export const load = () => fetch('/api/bookings');\n"
    "export const add = () => fetch('/api/bookings', {method: 'POST'});\n"
)
SCHEMA = "CREATE TABLE bookings (id SERIAL PRIMARY KEY, party_size INTEGER NOT NULL);\n"


def check(files: dict[str, str], contract: dict = CONTRACT, writes: dict | None = None):
    owner = {p: {"frontend": "web", "backend": "api", "database": "db"}[p.split("/")[0]] for p in files}
    if writes is None:
        writes = {}
        for path, task in owner.items():
            writes.setdefault(task, []).append(path)
    return check_tree(contract, files, owner, writes)


def tree(**changes) -> dict[str, str]:
    files = {"frontend/api.js": FRONTEND, "backend/main.py": BACKEND, "database/schema.sql": SCHEMA}
    files.update(changes)
    return {p: c for p, c in files.items() if c is not None}


def test_a_tree_that_agrees_passes_every_check_but_the_column_nobody_declared():
    report = check(tree())
    # 2 endpoints, 2 calls, 1 table + 2 columns, 3 ownership paths; the INSERT's `notes` is unknown.
    [mismatch] = report.mismatches
    assert (mismatch.check, mismatch.file, mismatch.line) == ("sql-column", "backend/main.py", 11)
    assert mismatch.found.endswith("uses column bookings.notes")
    assert mismatch.expected == "a column of bookings in the schema: id, party_size"
    assert (mismatch.deviating, mismatch.concerned) == ("api", ["db"])
    assert report.counts["routes"] == 2 and report.counts["calls"] == 2
    assert report.checks - report.passed == 1


def test_a_declared_endpoint_the_backend_does_not_serve_is_the_backends():
    report = check(
        tree(**{"backend/main.py": BACKEND.replace("@router.post('/bookings')", "@router.post('/book')")})
    )
    [served] = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert served.expected == "POST /api/bookings served, as the contract declares"
    assert served.file == "backend/main.py" and served.deviating == "api" and served.concerned == ["web"]
    assert "POST /api/book (backend/main.py:9)" in served.found


def test_a_call_with_a_method_the_contract_does_not_declare_is_the_callers():
    report = check(tree(**{"frontend/api.js": "axios.delete(`/api/bookings`);\n"}))
    [call] = [m for m in report.mismatches if m.kind == "interface" and m.check.startswith("call")]
    assert (call.check, call.file, call.line, call.deviating, call.concerned) == (
        "call-method",
        "frontend/api.js",
        1,
        "web",
        ["api"],
    )
    assert call.expected == "GET|POST /api/bookings, as the contract declares"


def test_a_declared_column_the_schema_lacks_is_the_schemas_and_concerns_the_code_using_it():
    report = check(tree(**{"database/schema.sql": "CREATE TABLE bookings (\n  id SERIAL PRIMARY KEY\n);\n"}))
    [missing] = [m for m in report.mismatches if m.check == "column-missing"]
    assert (missing.file, missing.line, missing.deviating, missing.concerned) == (
        "database/schema.sql",
        1,
        "db",
        ["api"],
    )
    assert missing.expected == "bookings.party_size INTEGER, as the contract declares"
    # The backend's use of the declared column is the schema's mismatch, not a second one.
    assert not [m for m in report.mismatches if m.found.endswith("bookings.party_size")]


def test_orm_models_are_the_schema_when_there_is_no_sql_file():
    models = (
        "from sqlalchemy.orm import Mapped, mapped_column\n\nclass Booking(Base):\n"
        "    __tablename__ = 'bookings'\n    id: Mapped[int] = mapped_column(primary_key=True)\n"
    )
    report = check(tree(**{"database/schema.sql": None, "database/models.py": models}))
    assert [(m.check, m.file, m.deviating) for m in report.mismatches if m.check == "column-missing"] == [
        ("column-missing", "database/models.py", "db")
    ]


def test_writes_outside_the_owned_paths_name_the_writer_and_the_owner():
    files = tree(**{"frontend/server.py": "x = 1\n"})
    writes = {
        "web": ["frontend/api.js", "backend/cors.py"],
        "api": ["backend/main.py"],
        "db": ["database/schema.sql"],
    }
    report = check(files, writes=writes)
    [owned] = [m for m in report.mismatches if m.kind == "ownership"]
    assert (owned.file, owned.deviating, owned.concerned) == ("backend/cors.py", "web", ["api"])
    assert owned.expected == "web writes only under frontend; backend/cors.py belongs to api"


def test_an_empty_contract_still_checks_the_codes_sql_against_the_schema():
    report = check(tree(), contract={"endpoints": [], "tables": [], "ownership": {}})
    assert report.checks == report.counts["sql_references"] == 6
    assert [m.check for m in report.mismatches] == ["sql-column"]


# ---------------------------------------------------------------- executions, in this process


def drive(execution_id: str) -> Execution:
    """The actor bodies in this process: queued tasks, aggregation, fix rounds, until it ends."""
    from executions.actors import run_task
    from executions.result_aggregator import aggregate

    for _ in range(40):
        queued = list(
            Task.objects.filter(execution_id=execution_id, status=TaskStatus.QUEUED).values_list(
                "id", "dispatch_count"
            )
        )
        for task_id, dispatch_no in queued:
            run_task.fn(task_id, dispatch_no)
        execution = Execution.objects.get(pk=execution_id)
        if execution.status == ExecutionStatus.AGGREGATING:
            aggregate(execution_id)
        elif execution.is_terminal:
            return execution
    raise AssertionError("the execution did not end")


@pytest.fixture
def start(transactional_db, redis_server, client_and_key, monkeypatch):
    from executions.planning import execution_plan
    from executions.services import execution_create

    def start(options: dict, *, sandbox_available: bool = True, max_rounds: int = 2) -> Execution:
        from pools.models import EngineSettings

        configure(latency=0.0, options=options)
        EngineSettings.objects.filter(pk=1).update(remediation_max_rounds=max_rounds)
        if not sandbox_available:
            monkeypatch.setattr(sandbox, "availability", lambda: (False, "bubblewrap is not installed"))
        client, _ = client_and_key
        message = "Build a restaurant website with online booking and secure payments"
        execution = execution_create(client=client, message=message, session_key="agree", mode="parallel")
        execution_plan(execution.pk)
        return drive(execution.pk)

    return start


def test_an_interface_mismatch_its_fixes_do_not_fix_ends_partial_with_the_refund(start):
    done = start({"flaws": ["interface_mismatch"], "remediation_fails": 9}, sandbox_available=False)

    assert done.status == "partial"
    [conflict] = Conflict.objects.filter(execution=done, kind="interface")
    assert conflict.status == "unresolved" and conflict.rounds == 2
    assert conflict.details["tasks"] == ["task_1", "task_2", "task_1_iface1", "task_1_iface2"]
    assert "still failing after 2 fix round(s)" in conflict.resolution
    assert Event.objects.filter(execution=done, type="execution.reopened").count() == 2
    # The frontend is withheld: 90 % of its share of the fee comes back.
    planned = {t.key: Decimal(str(t.weight)) for t in Task.objects.filter(execution=done, kind="plan")}
    share = planned["task_1"] / sum(planned.values())
    assert done.refund_usd == (done.fee_usd * Decimal("0.9") * share).quantize(Decimal("0.01"))
    checks = done.contract_report
    assert checks["failed"] == 2  # the list and the form of the bookings page
    assert done.quality_score == round(checks["passed"] / checks["checks"] * 0.85 + 1e-9, 2)


def test_without_a_sandbox_the_gate_does_not_run_and_the_delivery_is_not_called_verified(start):
    done = start({}, sandbox_available=False)

    assert done.status == "completed"
    gate = done.integration
    assert (
        gate["ran"] is False and gate["reason"] == "the sandbox is unavailable: bubblewrap is not installed"
    )
    assert gate["command"].endswith("cd backend && python3 -m pytest -q")
    assert "Integration gate not run" in done.final_response and "not verified" in done.final_response
    assert not Conflict.objects.filter(execution=done).exists()
    assert done.contract_report["failed"] == 0 and done.quality_score == 1.0


def test_a_python_file_that_does_not_parse_is_a_mismatch_of_its_owner_with_the_parsers_line():
    broken = "from fastapi import FastAPI\napp = FastAPI()\n\ndef x(:\n    pass\n"
    report = check(tree(**{"backend/main.py": broken}))
    [unreadable] = [m for m in report.mismatches if m.check == "file-unreadable"]
    assert (unreadable.kind, unreadable.file, unreadable.deviating) == ("interface", "backend/main.py", "api")
    assert (unreadable.line, unreadable.found) == (4, "Python syntax error: invalid syntax")
    # The backend is there but unreadable: its endpoints are not counted as served.
    served = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert len(served) == 2 and all(m.deviating == "api" and m.concerned == ["web"] for m in served)
    assert "no route could be read from the backend code (backend/main.py)" in served[0].found
    assert report.counts["unreadable"] == 1


def test_a_javascript_file_cut_short_is_a_mismatch_of_its_owner():
    report = check(
        tree(**{"frontend/api.js": FRONTEND + "export const x = () => fetch('/api/bookings', {\n"})
    )
    [unreadable] = [m for m in report.mismatches if m.check == "file-unreadable"]
    assert (unreadable.file, unreadable.deviating) == ("frontend/api.js", "web")
    assert unreadable.line == 3 and unreadable.found.endswith("'{' opened on line 3 is never closed")


def test_backend_code_without_a_readable_route_does_not_serve_the_declared_endpoints():
    # A FastAPI app whose routes are added in a loop the reader cannot follow: not one route read.
    backend = (
        "from fastapi import FastAPI\napp = FastAPI()\nHANDLERS = {}\n"
        "for path, fn in HANDLERS.items():\n    app.add_api_route(path, fn)\n"
    )
    report = check(tree(**{"backend/main.py": backend}))
    served = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert [m.expected for m in served] == [
        "GET /api/bookings served, as the contract declares",
        "POST /api/bookings served, as the contract declares",
    ]
    assert all(m.file == "backend/main.py" and m.deviating == "api" for m in served)


def test_a_tree_without_any_backend_code_leaves_the_endpoints_unchecked_and_says_so():
    # A frontend-only follow-up: the backend that serves the endpoints is already on main.
    files = {
        "frontend/api.js": FRONTEND,
        "frontend/util.py": "import requests\n\ndef ping():\n    return 1\n",
    }
    report = check(files, contract={**CONTRACT, "ownership": {}})
    assert not [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert any("no backend code in this tree" in note for note in report.notes)
    assert report.checks == report.passed == 2  # the two calls


def test_routers_behind_a_mount_that_cannot_be_followed_are_noted_and_not_counted_as_served():
    backend = {
        "backend/main.py": (
            "from fastapi import FastAPI\nfrom . import bookings\napp = FastAPI()\n"
            "ROUTERS = [bookings.router]\nfor r in ROUTERS:\n    app.include_router(r)\n"
        ),
        "backend/bookings.py": (
            "from fastapi import APIRouter\nrouter = APIRouter(prefix='/api')\n\n"
            "@router.get('/bookings')\ndef a(): ...\n\n@router.post('/bookings')\ndef b(): ...\n"
        ),
    }
    report = check({**tree(**{"backend/main.py": None}), **backend})
    assert any(
        "backend/bookings.py: router is not mounted where the reader could follow" in n for n in report.notes
    )
    served = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert len(served) == 2 and "could not be followed" in served[0].found


def follow_up_task(key: str, pk: int, files: dict[str, str], removed=()) -> Task:
    return Task(
        pk=pk,
        key=key,
        kind="plan",
        status=TaskStatus.SUCCEEDED,
        result={"files": [{"path": p, "content": c} for p, c in files.items()], "removed": list(removed)},
    )


def test_a_follow_up_is_checked_on_top_of_the_projects_files_and_not_held_to_what_it_left_alone():
    # The project so far: the backend and schema; a follow-up adds a page calling the existing API
    # and removes a stale file.
    base = {
        "backend/main.py": BACKEND,
        "database/schema.sql": SCHEMA,
        "docs/old.md": "stale",
    }
    page = follow_up_task("web", 1, {"frontend/api.js": FRONTEND}, removed=["docs/old.md"])
    files, owner_of, writes = lineage_trees([page], base)
    assert set(files) == {"backend/main.py", "database/schema.sql", "frontend/api.js"}
    assert owner_of == {"frontend/api.js": "web"} and writes == {"web": ["frontend/api.js"]}
    execution = Execution(contract=CONTRACT)

    report = review(execution, lineage_trees([page], base), base)
    # The page's calls are served by the backend it did not write: no endpoint goes unchecked.
    assert report.counts["routes"] == 2 and report.counts["calls"] == 2
    assert not [m for m in report.mismatches if m.check.startswith(("endpoint", "call"))]
    # The backend's unknown column was there before: counted and noted, raised as nobody's conflict.
    [old] = report.mismatches
    assert (old.check, old.file, old.deviating, old.inherited) == (
        "sql-column",
        "backend/main.py",
        None,
        True,
    )
    assert report.checks - report.passed == 1 and "before this execution" in report.notes[-1]
    assert group_mismatches(report) == {}

    # Without the project's files the same page's calls reach no backend at all.
    alone = review(execution, lineage_trees([page]))
    assert alone.counts["routes"] == 0 and not any(m.inherited for m in alone.mismatches)

    # A follow-up that rewrites the backend owns what its version gets wrong.
    rewrite = follow_up_task("api", 2, {"backend/main.py": BACKEND})
    [mine] = review(execution, lineage_trees([page, rewrite], base), base).mismatches
    assert (mine.deviating, mine.inherited) == ("api", False)
    assert list(group_mismatches(review(execution, lineage_trees([page, rewrite], base), base))) == [
        ("interface", "api")
    ]


def reviews_follow_up(execution: Execution):
    """The project serves /api/bookings; a follow-up's plan adds GET /api/reviews and a page calling
    it, and no task of it touches the backend. Its review."""
    base = {"backend/main.py": BACKEND, "database/schema.sql": SCHEMA}
    reviews = {"method": "GET", "path": "/api/reviews", "request": {}, "response": {}}
    execution.contract = {**CONTRACT, "endpoints": [*CONTRACT["endpoints"], reviews]}
    execution.contract_amendment = {"endpoints": [reviews], "tables": []}
    page = follow_up_task(
        "web", 1, {"frontend/reviews.js": "export const r = () => fetch('/api/reviews');\n"}
    )
    return review(execution, lineage_trees([page], base), base)


def test_an_endpoint_a_follow_up_declares_and_nobody_serves_is_its_own_not_the_projects():
    report = reviews_follow_up(Execution())

    [unserved] = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert (unserved.subject, unserved.deviating, unserved.inherited) == ("GET /api/reviews", None, False)
    assert ("interface", None) in group_mismatches(report)
    # The backend's own old mismatch (the undeclared column) is still the project's, not the plan's.
    assert [m.check for m in report.mismatches if m.inherited] == ["sql-column"]


@pytest.mark.django_db
def test_an_entry_the_plan_only_restates_from_the_projects_contract_stays_the_projects():
    # The project's contract already declares GET /api/reviews, which its backend never served; a
    # plan that copies the stored contract into its own does not take that mismatch on.
    owner, _ = make_client("acme")
    reviews = {"method": "GET", "path": "/api/reviews", "request": {}, "response": {}}
    Project.objects.create(client=owner, name="diner", contract={"endpoints": [reviews], "tables": []})
    execution = Execution(client=owner, project="diner")

    report = reviews_follow_up(execution)

    [unserved] = [m for m in report.mismatches if m.check == "endpoint-not-served"]
    assert (unserved.subject, unserved.inherited) == ("GET /api/reviews", True)
    assert group_mismatches(report) == {}


@pytest.mark.django_db
def test_an_unbuilt_endpoint_of_the_plan_is_an_unresolved_conflict_that_says_so():
    owner, _ = make_client("acme")
    execution = make_execution(owner, [{"key": "web", "status": "succeeded"}], status="aggregating")
    report = reviews_follow_up(execution)

    assert settle(execution.pk, report) == []

    [conflict] = Conflict.objects.filter(execution=execution)
    assert (conflict.kind, conflict.status) == ("interface", "unresolved")
    assert conflict.resolution == "the plan declares GET /api/reviews but none of its tasks builds it"


def test_a_follow_up_that_names_no_entity_declares_no_placeholder_endpoints():
    from pools.contracts.derive import contract_for

    areas = {"task_1": "frontend"}
    with_backend = contract_for("Add a dark mode toggle to the frontend", {**areas, "task_2": "backend"})
    assert [e["path"] for e in with_backend["endpoints"]] == ["/api/items", "/api/items"]
    pages_alone = contract_for("Add a dark mode toggle to the frontend", areas)
    assert pages_alone["endpoints"] == [] and pages_alone["tables"] == []
    follow_up = contract_for("Add a dark mode toggle to the frontend", areas, follow_up=True)
    assert follow_up["endpoints"] == [] and follow_up["tables"] == []
    named = contract_for("Add a reviews page to the frontend", areas, follow_up=True)
    assert [e["path"] for e in named["endpoints"]] == ["/api/reviews", "/api/reviews"]


def test_entities_are_named_in_the_singular_or_the_plural():
    from pools.contracts.derive import entities

    assert entities("Add invoices for each order, with a page listing them") == ["invoices", "orders"]
    assert entities("Let customers keep carts and leave a review") == ["customers", "carts", "reviews"]
    assert entities("Add a dark mode toggle", placeholder=False) == []


@pytest.mark.parametrize(
    "request_text,tables",
    [
        ("Build a chat app where users can create rooms and send messages", ["messages", "rooms"]),
        ("Build a recipe site where users upload recipes and rate them", ["recipes"]),
        ("Build an expense tracker", ["expenses"]),
        ("Build a URL shortener with click statistics", ["links", "clicks"]),
        ("Create a dashboard for sales analytics", ["sales"]),
        ("Build a time tracker for freelancers", ["time_entries"]),
        ("Let members book classes and track their workouts", ["members", "classes", "workouts"]),
        # A known word's table, whatever the words around it: appointments are bookings.
        ("Build a booking system where clients book appointments", ["bookings"]),
        ("Build a blog where users post articles and add comments", ["posts", "comments"]),
        # What an app of its kind keeps, and a table booked at a restaurant.
        ("Build a chat app", ["messages"]),
        ("Build a simple poll app where people vote", ["polls", "votes"]),
        ("Build a kanban board with columns and cards", ["cards"]),
        (
            "Build a restaurant site where staff add menu items and guests book tables",
            ["restaurants", "menu_items", "bookings"],
        ),
        # Named by the app's kind.
        ("Build a CRM for tracking leads and deals", ["leads", "deals"]),
        ("Build a reading list app", ["books_to_read"]),
        ("Build a helpdesk ticketing system", ["support_tickets"]),
        ("Build a support ticket system", ["support_tickets"]),
        ("Build an event ticketing platform", ["events"]),
        ("Build a project management tool with projects and tasks", ["projects", "tasks"]),
        ("Build a personal finance tracker with budgets", ["expenses", "budgets"]),
        ("Build a forum with threads and replies", ["threads", "replies"]),
        ("Build a library system to lend books to members", ["loans", "books", "members"]),
        ("Build a flashcard app", ["flashcards"]),
        ("Build a pet adoption site", ["pets"]),
        ("Build a quiz app with questions and scores", ["questions"]),
        ("Build a job board where companies post jobs and candidates apply", ["jobs", "applications"]),
        ("Build a newsletter signup form", ["subscribers"]),
        # People who log in are the users, not a record of their own; the others are.
        ("Build a gym site where members log in and book classes", ["classes"]),
        ("Build a flashcard app where students sign up", ["flashcards"]),
        ("Teachers log in to record grades for students", ["grades", "students"]),
        ("Members create an account and track workouts", ["workouts"]),
        ("Add user login so that members post threads and replies", ["threads", "replies"]),
        ("Build a library system to lend books to members", ["loans", "books", "members"]),
        # Words in those places that name no record, or that SQL keeps for itself.
        ("Make the cache thread safe and wrap writes in a transaction", []),
        ("Store the logs and track the changes", []),
        ("Let users manage their accounts and upload files", []),
        ("Add a values tracker", []),
    ],
)
def test_records_are_named_by_what_users_do_with_them(request_text, tables):
    from pools.contracts.derive import entities

    assert entities(request_text, placeholder=False) == tables


def test_a_long_request_names_a_bounded_number_of_records():
    from pools.contracts.derive import MAX_NAMED, entities

    text = " ".join(f"users can create widget{chr(97 + i % 26)}{chr(97 + i // 26)}s" for i in range(300))
    assert len(entities(text, placeholder=False)) == MAX_NAMED


def test_a_shop_has_products_carts_orders_and_payments_whether_or_not_it_names_them():
    from pools.contracts.derive import entities

    assert entities("Create an e-commerce store for handmade jewelry") == [
        "products",
        "carts",
        "orders",
        "payments",
    ]
    assert entities("Build an online bookstore with customer reviews") == [
        "customers",
        "reviews",
        "products",
        "carts",
        "orders",
        "payments",
    ]
    # "store" as a verb, a data store and a coffee shop's landing page sell nothing.
    assert entities("Store the readings in a key-value store", placeholder=False) == []
    assert entities("Build a landing page for a coffee shop", placeholder=False) == []
    assert entities("Add a dark mode toggle to my shop", placeholder=False) == []  # the one there is
    assert entities("Of course: a todo app with reminders, blog posts and notes") == [
        "todos",
        "reminders",
        "posts",
        "notes",
    ]
