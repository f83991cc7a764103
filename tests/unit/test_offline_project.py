"""What the offline agents deliver is a project that runs: the backend makes its tables from the
schema, and the pages post through forms to the backend that `next.config.js` passes /api on to."""

import importlib.util
import json
import sqlite3

from pools import offline
from pools.contracts.derive import contract_for

REQUEST = "Build a restaurant website with online booking and secure payments"


def project(tmp_path) -> dict[str, str]:
    contract = contract_for(REQUEST, {"task_1": "frontend", "task_2": "backend", "task_3": "database"})
    meta = {"request": REQUEST, "contract": contract}
    files = [
        *offline.codegen({**meta, "description": f"Build Next.js frontend: {REQUEST}"}, set())["files"],
        *offline.codegen(
            {**meta, "description": f"Build FastAPI backend with API endpoints: {REQUEST}"}, set()
        )["files"],
        *offline.schema({**meta, "description": "Design database schema"}, set())["files"],
    ]
    for item in files:
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    return {item["path"]: item["content"] for item in files}


def test_the_backend_makes_every_table_of_the_schema_on_first_use(tmp_path, monkeypatch):
    project(tmp_path)
    spec = importlib.util.spec_from_file_location("generated_db", tmp_path / "backend/app/db.py")
    db_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(db_module)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "app.db"))

    db_module.connect().close()
    db_module._made.clear()
    db_module.connect().close()  # a second start on the same file: every statement is idempotent

    tables = sqlite3.connect(tmp_path / "app.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert {"users", "restaurants", "bookings", "payments"} <= {name for (name,) in tables}
    insert = "INSERT INTO bookings (user_id, name, party_size, starts_at) VALUES (1, 'Ada', 4, '2026-06-01')"
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert db.execute(insert).lastrowid == 1  # SERIAL became an id SQLite numbers


def test_a_second_backend_deeper_in_the_tree_finds_the_projects_schema(tmp_path, monkeypatch):
    files = project(tmp_path)
    deeper = tmp_path / "src/task_5/backend/app/db.py"
    deeper.parent.mkdir(parents=True)
    deeper.write_text(files["backend/app/db.py"])
    spec = importlib.util.spec_from_file_location("deeper_db", deeper)
    db_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(db_module)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "deeper.db"))

    assert (tmp_path / "database/schema.sql") == db_module.SCHEMA
    db_module.connect().close()
    tables = sqlite3.connect(tmp_path / "deeper.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert {"users", "restaurants", "bookings", "payments"} <= {name for (name,) in tables}


def test_a_page_posts_a_form_of_the_contracts_fields_to_its_endpoint(tmp_path):
    page = project(tmp_path)["frontend/pages/bookings.tsx"]

    assert '<input name="name" type="text"' in page
    assert '<input name="party_size" type="number"' in page  # sent as a number: the backend checks it
    assert '<input name="starts_at" type="datetime-local"' in page
    assert "await fetch(`${API_BASE}/api/bookings`, {" in page and 'method: "POST"' in page
    assert 'role="alert"' in page  # a refusal's detail is shown, not dropped
    assert "{listed([row.name, row.party_size, when(row.starts_at)])}" in page  # each row as listed,
    assert 'values.filter((value) => value != null && value !== "")' in page  # what it has
    # A date and time as the reader's locale writes it, not as ISO 8601.
    assert 'date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })' in page
    # A list the API refuses is said, and the page stays up (an error's body is no array to map).
    assert "!Array.isArray(answer)" in page and "could not load the list" in page


def test_the_frontend_builds_as_a_nextjs_app_that_reaches_the_backend(tmp_path):
    files = project(tmp_path)
    package = json.loads(files["frontend/package.json"])

    assert {"dev", "build", "start"} <= set(package["scripts"])
    assert {"next", "react", "react-dom"} == set(package["dependencies"])
    assert "typescript" in package["devDependencies"]  # .tsx pages need it to build
    assert "frontend/tsconfig.json" in files and "next-env.d.ts" in files["frontend/.gitignore"]
    # Each part says how to run it.
    assert "BACKEND_URL=http://localhost:8001 npm run dev" in files["frontend/README.md"]
    assert "uvicorn app.main:app --port 8001" in files["backend/README.md"]
    config = files["frontend/next.config.js"]
    assert 'source: "/api/:path*"' in config and "destination: `${BACKEND_URL}/api/:path*`" in config


def test_the_home_page_links_to_every_records_page(tmp_path):
    files = project(tmp_path)

    pages = sorted(p for p in files if p.startswith("frontend/pages/") and p != "frontend/pages/index.tsx")
    assert pages == [f"frontend/pages/{t}.tsx" for t in ("bookings", "payments", "restaurants")]
    home = files["frontend/pages/index.tsx"]
    for page in pages:
        table = page.rsplit("/", 1)[1].removesuffix(".tsx")
        assert f'<Link href="/{table}">{table.capitalize()}</Link>' in home


def site(request: str, follow_up: bool = False) -> dict[str, str]:
    contract = contract_for(request, {"task_1": "frontend"}, follow_up=follow_up)
    meta = {"request": request, "contract": contract, "follow_up": follow_up}
    reply = offline.codegen({**meta, "description": f"Build Next.js frontend: {request}"}, set())
    return {item["path"]: item["content"] for item in reply["files"]}


def site_data(home: str) -> dict:
    return json.loads(home.split("const SITE = ", 1)[1].split(";\n", 1)[0])


def test_a_landing_page_is_a_site_of_sections_that_calls_no_api():
    files = site("Build a landing page for a coffee shop with our opening hours")

    assert contract_for("Build a landing page for a coffee shop", {"task_1": "frontend"})["endpoints"] == []
    home = files["frontend/pages/index.tsx"]
    data = site_data(home)
    assert data["title"] == "Coffee shop"
    assert [s["id"] for s in data["sections"]] == ["about", "menu", "hours", "contact"]
    assert "<a key={section.id} href={`#${section.id}`}>" in home and "<section key={section.id}" in home
    assert "fetch(" not in home and "frontend/next.config.js" not in files  # no backend to reach
    assert {"next", "react", "react-dom"} == set(json.loads(files["frontend/package.json"])["dependencies"])
    assert "npm run dev" in files["frontend/README.md"]


def test_a_portfolio_site_has_a_gallery_and_is_named_after_its_owner():
    data = site_data(site("Build a portfolio website for a photographer")["frontend/pages/index.tsx"])

    assert data["title"] == "Photographer portfolio"
    assert [s["id"] for s in data["sections"]] == ["about", "gallery", "contact"]


def test_the_clients_words_reach_a_site_only_as_plain_text_in_a_json_string():
    hostile = 'Build a landing page for <img src=x onerror=alert(1)>`${process.env}` "}; x(); //'
    home = site(hostile)["frontend/pages/index.tsx"]

    data = site_data(home)  # still one JSON object: nothing closed it early
    assert set(data["title"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -")
    for needle in ("<img", "onerror=", "${process", "x();"):
        assert needle not in home


def test_a_feature_of_a_site_of_pages_alone_is_a_component_without_pages():
    files = site("Add a dark mode toggle to the website", follow_up=True)

    assert list(files) == ["frontend/components/DarkModeToggle.tsx"]


def test_a_module_no_rule_derives_parses_whatever_the_clients_text():
    import ast

    hostile = 'Write a script for C:\\Names """; import os; os.system("x") \x00\n'
    reply = offline.codegen({"description": hostile, "contract": {}}, set())

    [module] = reply["files"]
    tree = ast.parse(module["content"])  # a backslash or quote of the client's ended no docstring
    assert [type(node).__name__ for node in tree.body] == ["Expr", "FunctionDef"]
    assert "skeleton" in reply["summary"]  # and it says what it is


def test_a_page_a_follow_up_asks_for_is_a_page_and_a_link_the_header_mounts():
    files = site("Add an about page to the website", follow_up=True)

    assert sorted(files) == ["frontend/components/AboutLink.tsx", "frontend/pages/about.tsx"]
    assert "<h1>About</h1>" in files["frontend/pages/about.tsx"]
    assert '<Link href="/">Home</Link>' in files["frontend/pages/about.tsx"]  # and back
    assert "<h1>FAQ</h1>" in site("Add a faq page", follow_up=True)["frontend/pages/faq.tsx"]
    assert "Who we are" in files["frontend/pages/about.tsx"]  # the section's first draft
    assert '<Link href="/about">About</Link>' in files["frontend/components/AboutLink.tsx"]
    app = offline.mounted([{"path": p, "content": files[p]} for p in files], "")[-1]
    assert app["path"] == "frontend/pages/_app.tsx" and "<AboutLink />" in app["content"]
    # The client's words reach the page as letters only.
    hostile = site('Add a <script>x</script> "}{ opening hours page', follow_up=True)
    assert sorted(hostile) == [
        "frontend/components/ScriptOpeningHoursLink.tsx",
        "frontend/pages/script-opening-hours.tsx",
    ]
    assert not any(needle in "".join(hostile.values()) for needle in ("<script", "}{", '"}'))


def test_a_backend_feature_the_offline_agent_cannot_derive_is_said_not_claimed():
    contract = contract_for(REQUEST, {"task_1": "frontend", "task_2": "backend", "task_3": "database"})
    request = "Add rate limiting to the backend"
    meta = {"request": request, "contract": contract, "follow_up": True, "description": request}

    reply = offline.codegen(meta, set())

    assert reply["summary"].startswith("Kept the backend's endpoints for restaurants, bookings, payments")
    assert "adds no backend feature of its own" in reply["summary"]
    assert "backend/app/main.py" in {f["path"] for f in reply["files"]}


def test_an_amount_kept_in_cents_is_typed_and_shown_as_12_99(tmp_path):
    page = project(tmp_path)["frontend/pages/payments.tsx"]

    assert (
        '<input name="amount_cents" type="number" step="0.01" placeholder="amount" data-cents required />'
        in page
    )
    assert (
        '"cents" in input.dataset\n              ? Math.round(input.valueAsNumber * 100)' in page
    )  # sent in cents
    assert "{listed([row.name, amount(row.amount_cents), row.status])}" in page
    assert "(cents / 100).toLocaleString(undefined, { minimumFractionDigits: 2" in page
    bookings = project(tmp_path)["frontend/pages/bookings.tsx"]
    assert "data-cents" not in bookings and "function amount(" not in bookings  # no amount there
