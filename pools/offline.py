"""The offline provider: deterministic, no network, the default so everything runs with no API key.

Its plans come from the deterministic planner; its code, audits and schemas from templates
driven by the request and task. Latency and failures can be simulated per profile through
`options`, for demos, tests and benchmarks:

    {"latency_sec": 1.0,                       # default for every call (else the pool's offline_latency_sec)
     "latency_rules": [{"match": "backend", "latency_sec": 9}],   # by task description substring
     "fail_rules": [{"match": "backend", "attempts": [1], "error": "malformed|broken_code|error|fatal"}],
     "flaws": ["sql_injection", "missing_fk_index"],               # first drafts carry these flaws
     "remediation_fails": 1,                                       # remediation rounds up to 1 fix nothing
     "plan": {"tasks": [...]}}                 # the PM answers with this plan (benchmarks: fixed DAGs)

"broken_code" answers with valid JSON whose Python file does not compile (verification fails it).
"""

import json
import re
import textwrap
import time

from .llm_types import Completion, LLMError, LLMRequest, LLMTimeout, ModelSpec, ProgressCallback

STEP_SEC = 0.05


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def latency_for(spec: ModelSpec, request: LLMRequest) -> float:
    """Simulated seconds for this call (also used by the scheduler's estimates)."""
    description = request.meta.get("description", "").lower()
    for rule in spec.options.get("latency_rules", []):
        if rule.get("match", "").lower() in description and (
            not rule.get("pool") or rule["pool"] == request.pool
        ):
            return float(rule["latency_sec"])
    if request.purpose != "agent":
        return float(spec.options.get("pm_latency_sec", 0.0))
    if "latency_sec" in spec.options:
        return float(spec.options["latency_sec"])
    return float(request.meta.get("pool_latency_sec", 1.0))


class OfflineProvider:
    def complete(
        self, spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None
    ) -> Completion:
        latency = latency_for(spec, request)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < latency:
            if elapsed >= request.timeout:
                raise LLMTimeout(f"no reply within {request.timeout:.1f}s")
            if on_progress:
                on_progress(min(0.99, elapsed / latency))
            time.sleep(min(STEP_SEC, latency - elapsed, max(0.0, request.timeout - elapsed)))
        if latency > request.timeout:
            raise LLMTimeout(f"no reply within {request.timeout:.1f}s")
        text = self._answer(spec, request)
        return Completion(
            text=text,
            input_tokens=_tokens(request.system + request.prompt),
            output_tokens=_tokens(text),
            model=spec.model,
            provider="offline",
        )

    def _answer(self, spec: ModelSpec, request: LLMRequest) -> str:
        meta = request.meta
        attempt = meta.get("attempt", 1)
        for rule in spec.options.get("fail_rules", []):
            if rule.get("match", "").lower() in meta.get("description", "").lower() and (
                not rule.get("attempts") or attempt in rule["attempts"]
            ):
                kind = rule.get("error", "error")
                if kind == "malformed":
                    return "Sure! Here is the code you asked for: {not json"
                if kind == "broken_code":
                    return json.dumps(
                        {
                            "summary": "Draft.",
                            "findings": [],
                            "files": [
                                {"path": "src/draft.py", "content": "def handler(request)\n    return None\n"}
                            ],
                        }
                    )
                raise LLMError(f"simulated provider failure ({kind})", retryable=kind != "fatal")
        if request.purpose == "plan":
            if "plan" in spec.options:
                return json.dumps(spec.options["plan"])
            return self._plan(meta)
        if request.purpose == "synthesis":
            return meta.get("plain_summary", "")  # the aggregator's own summary of the facts
        flaws = set(spec.options.get("flaws", [])) if meta.get("kind", "plan") == "plan" else set()
        if meta.get("kind") == "remediation" and meta.get("round", 0) <= spec.options.get(
            "remediation_fails", 0
        ):
            return json.dumps(
                {
                    "summary": "Reviewed the flagged code; no change made.",
                    "files": meta.get("target_files", []),
                    "findings": [],
                }
            )
        if request.role == "security":
            return json.dumps(audit(meta, flaws))
        if request.role == "database":
            return json.dumps(schema(meta, flaws))
        return json.dumps(codegen(meta, flaws))

    @staticmethod
    def _plan(meta: dict) -> str:
        """The planner's own deterministic plan, which it hands over as the offline PM's answer."""
        return "```json\n" + json.dumps({"tasks": meta.get("fallback_plan", [])}, indent=2) + "\n```"

    def expected_latency(self, spec: ModelSpec, request: LLMRequest) -> float | None:
        return latency_for(spec, request)

    def warm(self, spec: ModelSpec) -> None:
        """Nothing to load: the offline provider is plain Python, imported with this module."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


ENTITY_WORDS = {
    "menu": "menu_items",
    "menus": "menu_items",
    "booking": "bookings",
    "bookings": "bookings",
    "reservation": "bookings",
    "order": "orders",
    "orders": "orders",
    "payment": "payments",
    "payments": "payments",
    "restaurant": "restaurants",
    "restaurants": "restaurants",
    "review": "reviews",
    "reviews": "reviews",
    "product": "products",
    "products": "products",
    "cart": "carts",
    "contact": "messages",
    "checkout": "orders",
    "customer": "customers",
    "customers": "customers",
    "invoice": "invoices",
}


def entities(text: str) -> list[str]:
    found = []
    for word in _words(text):
        table = ENTITY_WORDS.get(word)
        if table and table not in found:
            found.append(table)
    return found or ["items"]


def codegen(meta: dict, flaws: set[str]) -> dict:
    description = meta.get("description", "")
    lowered = description.lower()
    tables = entities(meta.get("request", "") + " " + description)
    if meta.get("kind") == "remediation":
        files = [dict(f) for f in meta.get("target_files", [])]
        fixed = []
        for item in files:
            if item["path"].endswith(".py"):
                item["content"] = remediate_python(item["content"])
                fixed.append(item["path"])
        return {
            "summary": (
                f"Remediated {', '.join(fixed) or 'the flagged code'}: "
                "queries parameterised instead of string-formatted."
            ),
            "files": files,
            "findings": [],
        }
    if "frontend" in lowered or "next" in lowered or "ui" in _words(lowered):
        return {
            "summary": f"Next.js frontend with pages for {', '.join(tables)}.",
            "files": frontend_files(tables),
            "findings": [],
        }
    if "backend" in lowered or "api" in _words(lowered) or "fastapi" in lowered:
        return {
            "summary": f"FastAPI backend with endpoints for {', '.join(tables)}.",
            "files": backend_files(tables, "sql_injection" in flaws),
            "findings": [],
        }
    slug = "_".join(_words(description)[:4]) or "module"
    body = textwrap.dedent(f'''\
        """{description[:200].replace('"', "'")}"""


        def handle(payload: dict) -> dict:
            """Validate the payload and return a normalised copy."""
            if not isinstance(payload, dict):
                raise TypeError("payload must be a dict")
            return {{key.strip().lower(): value for key, value in payload.items()}}
        ''')
    return {
        "summary": f"Implemented {slug}.",
        "files": [{"path": f"src/{slug}.py", "content": body}],
        "findings": [],
    }


def frontend_files(tables: list[str]) -> list[dict]:
    pages = []
    for table in tables:
        name = table.rstrip("s").title().replace("_", "")
        pages.append(
            {
                "path": f"frontend/pages/{table}.tsx",
                "content": textwrap.dedent(f"""\
            import {{ useEffect, useState }} from "react";

            export default function {name}Page() {{
              const [rows, setRows] = useState([]);
              useEffect(() => {{
                fetch("/api/{table}").then((r) => r.json()).then(setRows);
              }}, []);
              return (
                <main>
                  <h1>{name}</h1>
                  <ul>{{rows.map((row) => <li key={{row.id}}>{{row.name}}</li>)}}</ul>
                </main>
              );
            }}
            """),
            }
        )
    package = {
        "name": "frontend",
        "private": True,
        "scripts": {"dev": "next dev", "build": "next build"},
        "dependencies": {"next": "15.0.0", "react": "19.0.0", "react-dom": "19.0.0"},
    }
    return [{"path": "frontend/package.json", "content": json.dumps(package, indent=2) + "\n"}, *pages]


def backend_files(tables: list[str], sql_injection: bool) -> list[dict]:
    if sql_injection:
        search = (
            "    rows = db.execute(\"SELECT id, name FROM menu_items WHERE name LIKE '%%%s%%'\" % q)"
            ".fetchall()\n"
        )
    else:
        search = (
            '    rows = db.execute("SELECT id, name FROM menu_items WHERE name LIKE ?", (f"%{q}%",))'
            ".fetchall()\n"
        )
    routes = "".join(
        textwrap.dedent(f"""\


        @app.get("/api/{table}")
        def list_{table}(db=Depends(get_db)):
            return [dict(row) for row in db.execute("SELECT * FROM {table} ORDER BY id LIMIT 100").fetchall()]
        """)
        for table in tables
    )
    main = (
        textwrap.dedent("""\
        import sqlite3

        from fastapi import Depends, FastAPI

        app = FastAPI(title="Generated API")


        def get_db():
            db = sqlite3.connect("app.db")
            db.row_factory = sqlite3.Row
            try:
                yield db
            finally:
                db.close()


        @app.get("/api/search")
        def search_menu(q: str, db=Depends(get_db)):
        """)
        + search
        + "    return [dict(row) for row in rows]\n"
        + routes
    )
    return [
        {"path": "backend/app/main.py", "content": main},
        {"path": "backend/requirements.txt", "content": "fastapi==0.115.0\nuvicorn==0.30.0\n"},
    ]


def remediate_python(source: str) -> str:
    """Rewrite the template's injectable query into a parameterised one."""
    return re.sub(
        r"db\.execute\(\"SELECT id, name FROM menu_items WHERE name LIKE '%%%s%%'\" % q\)",
        'db.execute("SELECT id, name FROM menu_items WHERE name LIKE ?", (f"%{q}%",))',
        source,
    )


def audit(meta: dict, flaws: set[str]) -> dict:
    findings = []
    audited = []
    for dep in meta.get("dependencies", []):
        for item in dep.get("files", []):
            audited.append(item["path"])
            for number, line in enumerate(item["content"].splitlines(), start=1):
                if re.search(r"execute\(\s*[\"'].*%s.*[\"']\s*%", line):
                    findings.append(
                        {
                            "severity": "critical",
                            "title": "SQL injection possible in menu search",
                            "file": item["path"],
                            "line": number,
                            "recommendation": "Use a parameterised query instead of string formatting.",
                        }
                    )
                if "shell=True" in line:
                    findings.append(
                        {
                            "severity": "high",
                            "title": "Command injection through shell=True",
                            "file": item["path"],
                            "line": number,
                            "recommendation": "Pass an argument list without a shell.",
                        }
                    )
    findings.append(
        {
            "severity": "info",
            "title": "Rate limiting recommended on payment endpoints",
            "file": None,
            "line": None,
            "recommendation": "Add a per-client rate limit middleware.",
        }
    )
    summary = (
        f"Audited {len(audited)} files (OWASP top 10, injection, XSS, CSRF): {len(findings) - 1} issues."
    )
    return {"summary": summary, "files": [], "findings": findings}


def schema(meta: dict, flaws: set[str]) -> dict:
    tables = [
        t for t in entities(meta.get("request", "") + " " + meta.get("description", "")) if t != "users"
    ]
    revision = meta.get("kind") == "revision"
    index_fks = revision or "missing_fk_index" not in flaws
    parts = [
        "CREATE TABLE users (\n    id SERIAL PRIMARY KEY,\n    email TEXT NOT NULL UNIQUE,\n"
        "    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);"
    ]
    indexes = []
    for table in tables:
        parts.append(
            f"CREATE TABLE {table} (\n    id SERIAL PRIMARY KEY,\n"
            "    user_id INTEGER NOT NULL REFERENCES users(id),\n"
            f"    name TEXT NOT NULL,\n    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);"
        )
        if index_fks:
            indexes.append(f"CREATE INDEX {table}_user_id_idx ON {table} (user_id);")
    sql = "\n\n".join(parts + indexes) + "\n"
    summary = f"Schema with {len(tables) + 1} tables" + (f" and {len(indexes)} indexes." if indexes else ".")
    return {"summary": summary, "files": [{"path": "database/schema.sql", "content": sql}], "findings": []}
