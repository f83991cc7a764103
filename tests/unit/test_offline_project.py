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
    assert '{[row.name, row.party_size, row.starts_at].join(" · ")}' in page  # each row as listed
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
        assert f'<Link href="/{table}">{table}</Link>' in home
