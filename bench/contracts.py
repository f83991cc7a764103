"""The contract checks on a 200-file project tree, and the integration gate's overhead.

Checks: `pools.contracts.check.check_tree` on a generated tree of 200 files shaped like the
projects agents write: FastAPI routers mounted with prefixes (raw SQL in f-strings), SQLAlchemy
models, a PostgreSQL schema, Next.js pages calling the API with template-literal URLs, axios
helpers, Python clients, tests and data files; its contract declares 80 endpoints and 40 tables.
Each run starts cold (the SQL parse cache cleared); the target is p50 ≤ 1 s.

Gate: `pools.integration_gate.run_gate` on the offline agents' restaurant project with 20 more
test modules, against `python3 -m pytest -q` alone in the sandbox on the same tree (the project's
own test time): the difference is what the gate adds (writing the workspace, the syntax checks,
`compileall`, its script).
"""

import statistics
import time

from . import harness

FILES = 200
ENTITIES = 40
TARGET_P50_SEC = 1.0


def entity(n: int) -> str:
    return f"entity_{n:02d}s"


def generated_tree() -> tuple[dict, dict[str, str], dict[str, str], dict[str, list[str]]]:
    """(contract, files, owner of each path, paths of each task): 200 files."""
    tables = [entity(n) for n in range(ENTITIES)]
    contract = {
        "endpoints": [
            {"method": method, "path": f"/api/{table}", "request": {}, "response": {}}
            for table in tables
            for method in ("GET", "POST")
        ],
        "tables": [
            {"name": t, "columns": {"id": "SERIAL", "name": "TEXT", "size": "INTEGER"}} for t in tables
        ],
        "ownership": {"frontend": ["frontend"], "backend": ["backend"], "database": ["database"]},
    }
    files: dict[str, str] = {}
    includes = []
    for n, table in enumerate(tables):  # 40 routers
        includes.append(
            f"from .routers import r{n:02d}\napp.include_router(r{n:02d}.router, prefix='/api')\n"
        )
        files[f"backend/app/routers/r{n:02d}.py"] = (
            "from fastapi import APIRouter, Depends\n\n"
            f"router = APIRouter(prefix='/{table}')\n\n\n"
            "@router.get('')\n"
            f"def list_{table}(db=Depends(get_db), limit: int = 100):\n"
            f'    query = f"SELECT id, name, size FROM {table} ORDER BY id LIMIT {{limit}}"\n'
            "    return db.execute(query).fetchall()\n\n\n"
            "@router.post('')\n"
            f"def create_{table}(item: dict, db=Depends(get_db)):\n"
            f'    db.execute("INSERT INTO {table} (name, size) VALUES (?, ?)",\n'
            "               (item['name'], item['size']))\n"
            "    return {'ok': True}\n"
        )
    files["backend/app/main.py"] = "from fastapi import FastAPI\n\napp = FastAPI()\n" + "".join(includes)
    for n, table in enumerate(tables[:20]):  # 20 model modules
        files[f"backend/app/models/m{n:02d}.py"] = (
            "from sqlalchemy.orm import Mapped, mapped_column\n\n\n"
            f"class Model{n}(Base):\n    __tablename__ = '{table}'\n"
            "    id: Mapped[int] = mapped_column(primary_key=True)\n"
            "    name: Mapped[str]\n    size: Mapped[int]\n"
        )
    for n, table in enumerate(tables):  # 40 pages
        files[f"frontend/pages/p{n:02d}.tsx"] = (
            'import { useEffect, useState } from "react";\nconst API = process.env.NEXT_PUBLIC_API ?? "";\n\n'
            f"export default function Page{n}() {{\n  const [rows, setRows] = useState([]);\n"
            "  useEffect(() => {\n"
            f"    fetch(`${{API}}/api/{table}?limit=50`).then((r) => r.json()).then(setRows);\n"
            "  }, []);\n"
            "  const add = (body) =>\n"
            f"    fetch(`${{API}}/api/{table}`, {{ method: 'POST', body: JSON.stringify(body) }});\n"
            "  return <ul>{rows.map((r) => <li key={r.id}>{r.name}</li>)}</ul>;\n}\n"
        )
    for n in range(20):  # 20 helpers
        table = tables[n]
        files[f"frontend/lib/api{n:02d}.ts"] = (
            'import axios from "axios";\nconst api = axios.create({ baseURL: "/api" });\n'
            f"export const load{n} = (id: number) => api.get(`/{table}?id=${{id}}`);\n"
        )
    for n in range(20):  # 20 Python clients and utilities
        files[f"backend/app/util/u{n:02d}.py"] = (
            "import httpx\n\n\n"
            f'def fetch_{n}(base: str):\n    return httpx.get(f"{{base}}/api/{tables[n]}").json()\n'
        )
    for n in range(20):  # 20 tests
        files[f"backend/tests/test_t{n:02d}.py"] = f"def test_{n}():\n    assert {n} + 1 == {n + 1}\n"
    files["database/schema.sql"] = "\n".join(
        f"CREATE TABLE {t} (\n    id SERIAL PRIMARY KEY,\n    name TEXT NOT NULL,\n    size INTEGER\n);"
        for t in tables
    )
    n = 0
    while len(files) < FILES:  # data files fill up to 200
        files[f"frontend/public/data{n:02d}.json"] = '{"items": []}\n'
        n += 1
    owner = {path: path.split("/")[0] for path in files}
    writes: dict[str, list[str]] = {}
    for path, task in owner.items():
        writes.setdefault(task, []).append(path)
    return contract, files, owner, writes


def bench_checks(n: int) -> tuple[dict, list]:
    from pools.contracts import sql_refs
    from pools.contracts.check import check_tree

    contract, files, owner, writes = generated_tree()
    durations = []
    report = None
    for _ in range(n):
        sql_refs._references.cache_clear()
        started = time.perf_counter()
        report = check_tree(contract, files, owner, writes)
        durations.append(time.perf_counter() - started)
    return report.as_dict(), durations


def gate_tree() -> dict[str, str]:
    from pools import offline
    from pools.contracts.derive import contract_for

    request = "Build a restaurant website with online booking and secure payments"
    contract = contract_for(request, {"task_1": "frontend", "task_2": "backend", "task_3": "database"})
    meta = {"contract": contract, "request": request}
    files = {}
    for description, maker in (
        ("Build Next.js frontend", offline.codegen),
        ("Build FastAPI backend with API endpoints", offline.codegen),
    ):
        files |= {
            f["path"]: f["content"] for f in maker({**meta, "description": description}, set())["files"]
        }
    files |= {f["path"]: f["content"] for f in offline.schema(meta, set())["files"]}
    for n in range(20):
        files[f"backend/tests/test_more_{n:02d}.py"] = f"def test_{n}():\n    assert {n} * 2 == {2 * n}\n"
    return files


def bench_gate(n: int) -> dict:
    from django.conf import settings

    from pools import integration_gate, sandbox
    from pools.agent_tools import Workspace

    files = gate_tree()
    gates, tests = [], []
    result = None
    for _ in range(n):
        started = time.perf_counter()
        result = integration_gate.run_gate(
            files, timeout_sec=120, workspaces=settings.OPENCLAW_WORKSPACES_DIR
        )
        gates.append(time.perf_counter() - started)
        with Workspace(files, parent=settings.OPENCLAW_WORKSPACES_DIR) as workspace:
            started = time.perf_counter()
            own = sandbox.run(workspace.root, "cd backend && python3 -m pytest -q", timeout_sec=120)
            tests.append(time.perf_counter() - started)
        assert own.exit_code == 0, own.output
    return {"gate": gates, "tests": tests, "result": result}


def run(ctx) -> dict:
    from pools import sandbox

    n = 5 if ctx.quick else 20
    report, durations = bench_checks(n)
    checks = harness.summary_ms(durations)
    rows = [
        [
            f"check_tree, {FILES} files ({report['checks']} checks)",
            checks["n"],
            checks["p50_ms"],
            checks["p99_ms"],
            checks["max_ms"],
        ]
    ]
    data = {"checks": checks, "report_counts": report["counts"], "mismatches": report["failed"]}
    results = [
        (
            f"checks p50 ≤ {TARGET_P50_SEC:g} s for {FILES} files",
            checks["p50_ms"] <= TARGET_P50_SEC * 1000,
            f"{checks['p50_ms']} ms",
        ),
        (
            "the generated tree agrees with its contract",
            report["failed"] == 0,
            f"{report['failed']} mismatches",
        ),
    ]
    available, detail = sandbox.availability()
    if available:
        runs = bench_gate(3 if ctx.quick else 10)
        gate, tests = harness.summary_ms(runs["gate"]), harness.summary_ms(runs["tests"])
        overhead = [g - t for g, t in zip(runs["gate"], runs["tests"], strict=True)]
        extra = harness.summary_ms(overhead)
        result = runs["result"]
        rows += [
            [
                f"integration gate ({result.passed} tests, {result.command})",
                gate["n"],
                gate["p50_ms"],
                gate["p99_ms"],
                gate["max_ms"],
            ],
            [
                "pytest alone in the sandbox (the project's own test time)",
                tests["n"],
                tests["p50_ms"],
                tests["p99_ms"],
                tests["max_ms"],
            ],
            ["gate overhead beyond the tests", extra["n"], extra["p50_ms"], extra["p99_ms"], extra["max_ms"]],
        ]
        data |= {"gate": gate, "tests": tests, "overhead": extra, "gate_ok": result.ok}
        results.append(("the gate passes the project", result.ok, f"{result.passed} passed"))
        notes = [f"sandbox: {detail}; median overhead {statistics.median(overhead):.3f} s"]
    else:
        notes = [f"gate not measured: {detail}"]
    return {
        "title": f"contract checks on {FILES} files, and the integration gate's overhead",
        "columns": ["case", "n", "p50 ms", "p99 ms", "max ms"],
        "rows": rows,
        "data": data,
        "checks": results,
        "notes": notes,
    }
