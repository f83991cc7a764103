"""A request whose users sign up and log in: read from its words, declared in the contract, and
built into every layer by the offline agents (the generated tests themselves run in the sandbox in
tests/integration/test_generated_accounts.py)."""

import pytest

from executions.pm_coordinator import layers_to_grow
from pools import offline
from pools.contracts.check import check_tree
from pools.contracts.contract import amend
from pools.contracts.derive import contract_for, entities, has_accounts, wants_accounts
from pools.verifiers.schema import check_migrations

SHARED_LISTS_APP = "Build a todo list app where users can sign up, log in and share lists with friends"
AREAS = {"task_1": "frontend", "task_2": "backend", "task_3": "database"}


@pytest.mark.parametrize(
    "request_text",
    [
        SHARED_LISTS_APP,
        "Build a notes app with user accounts",
        "Build a recipe site where cooks sign in to save recipes",
        "A booking app with login and password reset",
        "Build an expense tracker with authentication",
        "Members create an account and track workouts",
    ],
)
def test_what_asks_for_accounts(request_text):
    assert wants_accounts(request_text)


@pytest.mark.parametrize(
    "request_text",
    [
        "Build a restaurant website with online booking and secure payments",
        "Build an accounting app for small shops",
        "Build a blog with comments",
        "Build an event registration form",
        "Build a newsletter signup form",
        "Add a mailing list sign-up to the landing page",
        "Add a phone number field to bookings",
    ],
)
def test_what_does_not_ask_for_accounts(request_text):
    assert not wants_accounts(request_text)


def test_the_contract_of_a_project_with_accounts():
    contract = contract_for(SHARED_LISTS_APP, AREAS)

    endpoints = [(e["method"], e["path"]) for e in contract["endpoints"]]
    assert endpoints[:3] == [("POST", "/api/signup"), ("POST", "/api/login"), ("GET", "/api/me")]
    assert ("GET", "/api/todos") in endpoints and ("POST", "/api/lists") in endpoints
    # A user changes and deletes their own records.
    assert ("DELETE", "/api/todos/{id}") in endpoints and ("DELETE", "/api/lists/{id}") in endpoints
    patch = next(e for e in contract["endpoints"] if (e["method"], e["path"]) == ("PATCH", "/api/todos/{id}"))
    assert patch["request"] == {"name": "string", "due_at": "string (ISO 8601)", "done": "boolean"}
    assert patch["response"] == {"updated": "integer"}
    tables = {t["name"]: t["columns"] for t in contract["tables"]}
    assert list(tables) == ["users", "todos", "lists", "auth_tokens", "login_failures"]
    assert list(tables["users"]) == ["id", "email", "password_hash", "created_at"]
    assert tables["auth_tokens"]["token_hash"] == "TEXT PRIMARY KEY"
    assert has_accounts(contract)

    without = contract_for("Build a todo list app", AREAS)
    assert not has_accounts(without)
    assert [t["name"] for t in without["tables"]] == ["users", "todos"]
    assert not [e for e in without["endpoints"] if e["path"] in ("/api/signup", "/api/login", "/api/me")]


def test_without_accounts_only_a_list_everyone_keeps_together_is_changed_and_deleted():
    # A household's todos are one list anyone ticks; anyone changing or deleting a restaurant's
    # bookings, or a bakery site's records, is not what the client asked for.
    todos = contract_for("Build a todo list app", AREAS)
    one = [(e["method"], e["path"]) for e in todos["endpoints"] if e["path"].endswith("{id}")]
    assert one == [("PATCH", "/api/todos/{id}"), ("DELETE", "/api/todos/{id}")]
    for request in (
        "Build a restaurant website with online booking",
        "Build a website for my bakery",
        "Build a notes app with invoices",
    ):
        methods = {(e["method"], e["path"]) for e in contract_for(request, AREAS)["endpoints"]}
        assert ("PATCH", "/api/bookings/{id}") not in methods and ("DELETE", "/api/items/{id}") not in methods
        assert ("PATCH", "/api/invoices/{id}") not in methods
    notes = {
        (e["method"], e["path"]) for e in contract_for("Build a notes app with invoices", AREAS)["endpoints"]
    }
    assert ("PATCH", "/api/notes/{id}") in notes and ("DELETE", "/api/notes/{id}") in notes
    # A shopping list's items are ticked off by anyone who shops.
    groceries = contract_for("Build a grocery list", AREAS)
    assert ("PATCH", "/api/list_items/{id}") in {(e["method"], e["path"]) for e in groceries["endpoints"]}
    assert groceries["tables"][1]["columns"]["done"] == "BOOLEAN NOT NULL DEFAULT false"


@pytest.mark.parametrize(
    "request_text,tables",
    [
        ("Build a shopping list app", ["list_items"]),
        ("Build shopping lists for families", ["list_items"]),
        ("Build an online shopping site", ["products", "carts", "orders", "payments"]),
    ],
)
def test_a_shopping_list_is_no_shop(request_text, tables):
    assert entities(request_text) == tables


def test_records_kept_for_the_books_are_not_deleted_even_by_their_user():
    shop = contract_for("Build an online store for handmade jewelry where customers log in", AREAS)
    deleted = {e["path"] for e in shop["endpoints"] if e["method"] == "DELETE"}
    assert deleted == {"/api/products/{id}", "/api/carts/{id}"}  # the customers are its users
    changed = {e["path"] for e in shop["endpoints"] if e["method"] == "PATCH"}
    assert changed == deleted


def test_a_follow_up_keeps_the_projects_accounts_and_asks_for_none_of_its_own():
    stored = contract_for(SHARED_LISTS_APP, AREAS)
    phone = contract_for("Add a phone number field to todos", AREAS, follow_up=True, stored=stored)
    assert has_accounts(phone)
    assert [t["name"] for t in phone["tables"]] == ["users", "todos", "auth_tokens", "login_failures"]
    assert "phone" in {t["name"]: t["columns"] for t in phone["tables"]}["todos"]


RESTAURANT = "Build a restaurant website with online booking and secure payments"
LOGIN = "Add user login so that guests see only their own bookings"


def test_a_follow_up_adding_accounts_reaches_every_layer_and_record():
    stored = contract_for(RESTAURANT, AREAS)
    files = [("frontend/pages/bookings.tsx", 1), ("backend/app/main.py", 1), ("database/schema.sql", 1)]
    assert layers_to_grow(LOGIN, files, stored) == {"frontend", "backend", "database"}
    assert (
        layers_to_grow("Add user login", files, contract_for(SHARED_LISTS_APP, AREAS)) == frozenset()
    )  # it has them

    contract = amend(stored, contract_for(LOGIN, AREAS, follow_up=True, stored=stored))
    assert has_accounts(contract)
    tables = {t["name"]: t["columns"] for t in contract["tables"]}
    assert tables["users"]["password_hash"] == "TEXT"  # the users there have none: they cannot log in
    assert "auth_tokens" in tables and {"restaurants", "bookings", "payments"} <= set(tables)
    deleted = {e["path"] for e in contract["endpoints"] if e["method"] == "DELETE"}
    assert deleted == {"/api/restaurants/{id}", "/api/bookings/{id}"}


def test_the_migration_adding_accounts_disowns_the_rows_made_before_them():
    stored = contract_for(RESTAURANT, AREAS)
    before = generated(stored, RESTAURANT)
    contract = amend(stored, contract_for(LOGIN, AREAS, follow_up=True, stored=stored))
    meta = {"request": LOGIN, "contract": contract, "follow_up": True}
    sql = {p: text for p, text in before.items() if p.endswith(".sql")}

    database = offline.schema({**meta, "existing_sql": sql}, set())
    frontend = offline.codegen({**meta, "description": f"Build Next.js frontend: {LOGIN}"}, set())
    backend = offline.codegen({**meta, "description": f"Build FastAPI backend: {LOGIN}"}, set())

    migration = database["files"][1]
    assert migration["path"] == "database/migrations/0001_users_password_hash.sql"
    assert "ALTER TABLE users ADD COLUMN password_hash TEXT;" in migration["content"]
    assert (
        "UPDATE bookings SET user_id = 0 WHERE user_id NOT IN (SELECT id FROM users);" in migration["content"]
    )
    assert "CREATE TABLE auth_tokens" in database["files"][0]["content"]
    assert database["summary"].endswith(
        "adds users.password_hash; the restaurants, bookings, payments made before accounts become no one's."
    )
    assert "frontend/pages/account.tsx" in {f["path"] for f in frontend["files"]}
    assert not [f for f in frontend["files"] if "/components/" in f["path"]]  # no "AddUserLogin" component
    assert frontend["summary"].startswith("Pages for restaurants, bookings, payments with sign-up and log-in")
    assert backend["summary"].endswith(
        "each sees only their own bookings, payments, everyone sees restaurants and a user adds their "
        "own; a user changes and deletes their own restaurants, bookings."
    )
    assert "backend/app/accounts.py" in {f["path"] for f in backend["files"]}


def test_a_table_new_with_accounts_is_made_by_the_schema_not_disowned_by_the_migration():
    forum = "Build a forum with threads and replies"
    login = "Add user login so that users post threads, replies and reviews"
    stored = contract_for(forum, AREAS)
    sql = {p: text for p, text in generated(stored, forum).items() if p.endswith(".sql")}
    contract = amend(stored, contract_for(login, AREAS, follow_up=True, stored=stored))
    assert "reviews" in {t["name"] for t in contract["tables"]} - {t["name"] for t in stored["tables"]}

    schema, migration = offline.schema(
        {"request": login, "contract": contract, "follow_up": True, "existing_sql": sql}, set()
    )["files"]

    assert "CREATE TABLE reviews" in schema["content"]
    assert "UPDATE threads SET user_id = 0" in migration["content"]
    assert "reviews" not in migration["content"]  # no such table in a database made before
    # The migration brings a database made from the schema before it up to the new one.
    [report] = check_migrations({f["path"]: f["content"] for f in (schema, migration)}, sql).values()
    assert report["applied"] and report["accepted"] and report["errors"] == [], report


def generated(contract: dict, request: str = SHARED_LISTS_APP) -> dict[str, str]:
    meta = {"request": request, "contract": contract}
    files = [
        *offline.codegen({**meta, "description": f"Build Next.js frontend: {request}"}, set())["files"],
        *offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())["files"],
        *offline.schema(meta, set())["files"],
    ]
    return {f["path"]: f["content"] for f in files}


def test_every_layer_is_built_for_accounts_and_the_contract_checks_pass():
    contract = contract_for(SHARED_LISTS_APP, AREAS)
    files = generated(contract)

    main = files["backend/app/main.py"]
    assert "from .accounts import current_user" in main
    assert (
        "def list_todos(offset: int = Query(0, ge=0, le=2**31), user: int = Depends(current_user), db" in main
    )
    assert "FROM todos WHERE user_id = ? ORDER BY id LIMIT ? OFFSET ?" in main  # a page at a time
    assert "db.execute(query, (user, PAGE, offset))" in main
    # The row is the signed-in user's; a todo left without `done` is not done.
    assert '(user, item["name"], item.get("due_at"), bool(item.get("done")),)' in main  # no due date needed
    assert 'item.get("user_id"' not in main
    assert 'DELETE FROM todos WHERE id = ? AND user_id = ?", (item_id, user)' in main
    # A JSON merge patch: a field given is set (null too), a field left out kept.
    assert (
        '"UPDATE todos SET name = CASE WHEN ? THEN ? ELSE name END, due_at = CASE WHEN ? THEN ? ELSE due_at'
        ' END, done = CASE WHEN ? THEN ? ELSE done END WHERE id = ? AND user_id = ?",\n'
        '        ("name" in item, item.get("name"), "due_at" in item, item.get("due_at"), "done" in item,'
        ' item.get("done"), item_id, user),'
    ) in main
    assert (
        "blank = [name for name in ['name', 'done'] if name in item and item[name] in (None, \"\")]" in main
    )
    assert "row.update({name: bool(row[name]) for name in ['done']})" in main  # not SQLite's 1 or 0
    assert "unflagged = not_true_or_false(item, ['done'])" in main
    accounts = files["backend/app/accounts.py"]
    assert "hashlib.scrypt" in accounts and "token_hash(token)" in accounts
    assert "backend/tests/test_accounts.py" in files
    schema = files["database/schema.sql"]
    assert "password_hash TEXT NOT NULL" in schema and "CREATE TABLE auth_tokens" in schema
    page = files["frontend/pages/todos.tsx"]
    assert "fetch(`${API_BASE}/api/todos?offset=${offset}`, { headers: signedIn() })" in page
    assert '{more && <button type="button" onClick={() => load(rows.length)}>More</button>}' in page
    assert '"Content-Type": "application/json", ...signedIn()' in page
    assert 'fetch(`${API_BASE}/api/todos/${id}`, { method: "DELETE", headers: signedIn() })' in page
    assert "<button onClick={() => remove(row.id)}>Delete</button>" in page
    assert 'fetch(`${API_BASE}/api/todos/${id}`, {\n      method: "PATCH",' in page
    assert "<button onClick={() => edit(row)}>Edit</button>" in page
    # Done is ticked in the row itself, and in the form.
    assert (
        '<label><input type="checkbox" checked={Boolean(row.done)} onChange={() => flip(row, "done")} />'
        " done</label>" in page
    )
    assert '<label><input name="done" type="checkbox" /> done</label>' in page
    assert "frontend/pages/account.tsx" in files
    assert '<Link href="/account">Account</Link>' in files["frontend/pages/index.tsx"]
    # Every page has the one look.
    for path in ("frontend/pages/todos.tsx", "frontend/pages/account.tsx", "frontend/pages/index.tsx"):
        assert 'import Look from "../lib/look";' in files[path] and "<Look />" in files[path]
    assert "dangerouslySetInnerHTML={{ __html: LOOK }}" in files["frontend/lib/look.tsx"]

    report = check_tree(contract, files, {}, {})
    assert report.mismatches == [] and report.passed == report.checks > 0


def test_a_project_without_accounts_is_built_as_before():
    request = "Build a restaurant website with online booking"
    files = generated(contract_for(request, AREAS), request)

    assert "backend/app/accounts.py" not in files and "frontend/pages/account.tsx" not in files
    assert 'item.get("user_id", 1)' in files["backend/app/main.py"]
    page = files["frontend/pages/bookings.tsx"]
    assert "signedIn" not in page and "remove(" not in page and "edit(" not in page
    assert (
        "DELETE" not in files["backend/app/main.py"] and "DELETES" not in files["backend/tests/test_api.py"]
    )
    assert (
        "UPDATE" not in files["backend/app/main.py"] and "UPDATES" not in files["backend/tests/test_api.py"]
    )
    assert "password_hash" not in files["database/schema.sql"]


def test_a_list_everyone_keeps_together_is_changed_and_deleted_by_anyone():
    files = generated(contract_for("Build a todo list app", AREAS), "Build a todo list app")

    main = files["backend/app/main.py"]
    assert 'DELETE FROM todos WHERE id = ?", (item_id,)' in main
    assert 'done = CASE WHEN ? THEN ? ELSE done END WHERE id = ?",' in main
    assert 'raise HTTPException(404, f"no such record: {item_id}")' in main
    tests = files["backend/tests/test_api.py"]
    assert "UPDATES.add('todos')" in tests and "DELETES.add('todos')" in tests
    page = files["frontend/pages/todos.tsx"]
    assert "signedIn" not in page and "remove(row.id)" in page and "edit(row)" in page
    assert 'onChange={() => flip(row, "done")}' in page  # ticked in the row itself
    assert "password_hash" not in files["database/schema.sql"]


def test_a_yes_or_no_field_of_a_record_no_one_changes_is_shown_not_ticked():
    request = "Add a paid checkbox to bookings"
    stored = contract_for("Build a restaurant website with online booking", AREAS)
    contract = amend(stored, contract_for(request, AREAS, follow_up=True, stored=stored))
    page = generated(contract, request)["frontend/pages/bookings.tsx"]

    assert '<label><input name="paid" type="checkbox" /> paid</label>' in page
    assert '{row.paid ? " ✓ paid" : ""}' in page and "flip(" not in page


def test_a_field_follow_up_on_a_project_with_accounts_keeps_them_in_every_layer():
    stored = contract_for(SHARED_LISTS_APP, AREAS)
    request = "Add a phone number field to todos"
    contract = amend(stored, contract_for(request, AREAS, follow_up=True, stored=stored))
    meta = {"request": request, "contract": contract, "follow_up": True}
    sql = {"database/schema.sql": generated(stored)["database/schema.sql"]}
    files = {
        f["path"]: f["content"]
        for f in [
            *offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())["files"],
            *offline.codegen({**meta, "description": f"Build Next.js frontend: {request}"}, set())["files"],
            *offline.schema({**meta, "existing_sql": sql}, set())["files"],
        ]
    }

    assert "backend/app/accounts.py" in files and "frontend/pages/account.tsx" in files
    assert "FROM todos WHERE user_id = ?" in files["backend/app/main.py"]
    migration = files["database/migrations/0001_todos_phone.sql"]
    assert "ALTER TABLE todos ADD COLUMN phone TEXT;" in migration and "auth_tokens" not in migration
    assert "login_failures" not in migration


def test_records_everyone_sees_are_listed_to_all_and_added_by_a_signed_in_user():
    blog = "Build a blog where writers log in to publish posts"
    assert entities(blog) == ["posts"]  # "writers log in" keeps no log of writers
    files = generated(contract_for(blog, AREAS), blog)

    main = files["backend/app/main.py"]
    assert "def list_posts(offset: int = Query(0, ge=0, le=2**31), db=Depends(get_db)):" in main
    assert "FROM posts ORDER BY id" in main
    assert "def create_posts(item: dict, user: int = Depends(current_user), db=Depends(get_db)):" in main
    assert 'DELETE FROM posts WHERE id = ? AND user_id = ?", (item_id, user)' in main
    tests = files["backend/tests/test_accounts.py"]
    assert "def test_everyone_sees_public_records_and_only_a_signed_in_user_adds_one" in tests
    assert "PRIVATE" not in tests  # a blog of posts alone has no record a user keeps to themselves

    shop = "Build an online store for handmade jewelry where customers log in"
    backend = offline.codegen(
        {
            "request": shop,
            "contract": contract_for(shop, AREAS),
            "description": f"Build FastAPI backend: {shop}",
        },
        set(),
    )
    assert backend["summary"].endswith(
        "users sign up and log in with an email and a password, each sees only their own carts, orders, "
        "payments, everyone sees products and a user adds their own; a user changes and deletes their "
        "own products, carts."
    )


@pytest.mark.parametrize(
    ("request_text", "said"),
    [
        (
            "Build a restaurant website with online booking",
            "restaurants, bookings; anyone adds and lists records, and no one changes or deletes them: that "
            'comes with accounts (a follow-up such as "Add user login").',
        ),
        (
            "Build a todo list app",
            "todos; anyone adds, lists, changes and deletes todos: one list kept by all who use the app (a "
            'follow-up such as "Add user login" gives each user their own).',
        ),
        (
            "Build a notes app where guests leave reviews",
            "notes, reviews; anyone adds, lists, changes and deletes notes: one list kept by all who use the "
            "app; anyone adds and lists reviews, and no one changes or deletes them: that comes with "
            'accounts (a follow-up such as "Add user login").',
        ),
    ],
)
def test_a_backend_without_accounts_says_what_it_does_not_do_and_how_to_get_it(request_text, said):
    meta = {"request": request_text, "contract": contract_for(request_text, AREAS)}
    backend = offline.codegen({**meta, "description": f"Build FastAPI backend: {request_text}"}, set())

    assert backend["summary"] == "FastAPI backend with endpoints for " + said
