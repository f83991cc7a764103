"""The offline provider: deterministic, no network, the default so everything runs with no API key.

Its plans come from the deterministic planner; its code, audits and schemas from templates
driven by the request and task. Latency and failures can be simulated per profile through
`options`, for demos, tests and benchmarks:

    {"latency_sec": 1.0,                       # default for every call (else the pool's offline_latency_sec)
     "latency_rules": [{"match": "backend", "latency_sec": 9}],   # by task description substring
     "fail_rules": [{"match": "backend", "attempts": [1], "error": "malformed|broken_code|error|fatal"}],
     "flaws": ["sql_injection", "missing_fk_index"],               # first drafts carry these flaws
     "remediation_fails": 1,                                       # remediation rounds up to 1 fix nothing
     "plan": {"tasks": [...]},                 # the PM answers with this plan (benchmarks: fixed DAGs)
     "tools": true}                            # agents work in the tool loop (false: one JSON reply)

With tools, an offline agent works as a real one would, deterministically: it writes its files and,
for code, a test of them, runs the test in the sandbox, and finishes; a security agent lists the
files it audits first. The flaw "failing_test" makes the first test fail so that the next turn fixes
it. A call's simulated latency is spread over the turns, so a task takes as long with tools as without.

"broken_code" answers with valid JSON whose Python file does not compile (verification fails it).
"""

import json
import re
import textwrap
import time

from .llm_types import Completion, LLMError, LLMRequest, LLMTimeout, ModelSpec, ProgressCallback, ToolCall

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
        looping = bool(request.tools) and spec.options.get("tools", True) is not False
        latency = latency_for(spec, request)
        if looping:
            latency /= planned_turns(spec, request)
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
        calls: tuple[ToolCall, ...] = ()
        if looping:
            text, calls = next_step(spec, request, text)
        return Completion(
            text=text,
            input_tokens=max(1, request.conversation_chars() // 4),
            output_tokens=_tokens(text + "".join(c.raw for c in calls)),
            model=spec.model,
            provider="offline",
            tool_calls=calls,
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
        if meta.get("kind") == "remediation" and any(
            has_conflict_markers(f.get("content", "")) for f in meta.get("target_files", [])
        ):
            return json.dumps(resolve_merge(meta))
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


def has_conflict_markers(content: str) -> bool:
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in content.splitlines())


def union_of_sides(content: str) -> str:
    """A file with git's conflict markers resolved the offline way: both sides kept, ours first."""
    out, side = [], None
    for line in content.splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            side = "ours"
        elif side and line.startswith("||||||| "):
            side = "base"
        elif side and line.rstrip("\n") == "=======":
            side = "theirs"
        elif side and line.startswith(">>>>>>> "):
            side = None
        elif side != "base":
            out.append(line)
    return "".join(out)


def resolve_merge(meta: dict) -> dict:
    files = [
        {"path": f["path"], "content": union_of_sides(f["content"])}
        for f in meta.get("target_files", [])
        if has_conflict_markers(f.get("content", ""))
    ]
    return {
        "summary": f"Resolved the merge conflict in {', '.join(f['path'] for f in files)}: kept both sides.",
        "files": files,
        "findings": [],
    }


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


# ---------------------------------------------------------------- the tool loop


def _call(number: int, name: str, arguments: dict) -> ToolCall:
    return ToolCall(f"offline_{number}_{name}", name, arguments, json.dumps(arguments))


def _test_path(files: list[dict]) -> str:
    first = files[0]["path"].split("/")
    slug = first[0] if len(first) > 1 else first[0].rsplit(".", 1)[0]
    return f"tests/test_{re.sub(r'[^a-z0-9_]', '_', slug.lower())}_files.py"


def _test_source(paths: list[str], flawed: bool) -> str:
    expected = [*paths, "README.md"] if flawed else paths  # the flaw: a file nobody wrote
    return textwrap.dedent(f"""\
        \"\"\"The agent's own check of its output: every file is there, every Python file parses.\"\"\"

        import ast
        import pathlib

        ROOT = pathlib.Path(__file__).resolve().parent.parent
        FILES = {expected!r}


        def test_every_file_is_written():
            for path in FILES:
                assert (ROOT / path).is_file(), path


        def test_python_files_parse():
            for path in FILES:
                if path.endswith(".py"):
                    ast.parse((ROOT / path).read_text(), filename=path)
        """)


def _tests_first(spec: ModelSpec, request: LLMRequest) -> bool:
    return request.role == "codegen" and request.meta.get("kind", "plan") != "remediation"


def planned_turns(spec: ModelSpec, request: LLMRequest) -> int:
    explore = int(spec.options.get("explore_turns", 0))
    if not _tests_first(spec, request):
        return explore + 2
    return explore + (5 if "failing_test" in spec.options.get("flaws", []) else 3)


def next_step(spec: ModelSpec, request: LLMRequest, answer_text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """The next turn of an offline agent whose whole answer is `answer_text`, from the conversation
    so far: write (or list), run the tests, fix a failing test once, finish."""
    try:
        answer = json.loads(answer_text)
    except ValueError:
        return answer_text, ()  # a malformed reply stays one: the loop says so
    number = 1 + sum(1 for m in request.history if m.role == "assistant")
    called = [c for m in request.history for c in m.tool_calls]
    files = answer.get("files", [])
    finish = _call(number, "finish", {"summary": answer["summary"], "findings": answer.get("findings", [])})
    # Option explore_turns: look around that many turns first (benchmarks: a loop of a given length).
    if number <= int(spec.options.get("explore_turns", 0)):
        return "Looking at the workspace.", (_call(number, "list_files", {}),)
    if request.role == "security":
        if not any(c.name == "list_files" for c in called):
            return "Listing the files to audit.", (_call(number, "list_files", {}),)
        return "Done.", (finish,)
    if not any(c.name == "write_file" for c in called):
        writes = [_call(number, "write_file", {"path": f["path"], "content": f["content"]}) for f in files]
        if _tests_first(spec, request) and files:
            flawed = "failing_test" in spec.options.get("flaws", [])
            source = _test_source([f["path"] for f in files], flawed)
            writes.append(_call(number, "write_file", {"path": _test_path(files), "content": source}))
        return "Writing the files.", tuple(writes) or (finish,)
    runs = [c for c in called if c.name == "run"]
    last = request.history[-1].tool_results[-1] if request.history[-1].tool_results else None
    wrote_tests = any(c.name == "write_file" and c.arguments["path"].startswith("tests/") for c in called)
    if wrote_tests and (not runs or (last is not None and last.name == "write_file")):
        test = next(
            c.arguments["path"]
            for c in called
            if c.name == "write_file" and c.arguments["path"].startswith("tests/")
        )
        return "Running the tests.", (_call(number, "run", {"command": f"python3 -m pytest -q {test}"}),)
    if last is not None and last.name == "run" and len(runs) == 1 and not last.is_error:
        outcome = json.loads(last.content)
        if outcome["exit_code"] != 0:
            paths = [f["path"] for f in files]
            fixed = _test_source(paths, flawed=False)
            return "The test expects a file nobody wrote; fixing the test.", (
                _call(number, "write_file", {"path": _test_path(files), "content": fixed}),
            )
    return "Done.", (finish,)
