"""Check a project tree against its contract, by parsing only (no code runs, no model is asked).

`check_tree(contract, files, owner_of, writes)`:
- readable: every Python and JavaScript/TypeScript file parses (a file the reader cannot parse
  hides its routes, calls and SQL, so it is a mismatch, not skipped);
- endpoints: every declared endpoint is served by a backend route, when the tree has backend code
  (a file that imports a web framework, a Next.js API route, or Python that does not parse); a
  tree without any (a frontend-only follow-up) leaves them unchecked, and says so;
- calls: every client call under a declared endpoint's first segment (`/api/…`) names a declared
  endpoint with a declared method; test files are not clients;
- tables: every declared table and column exists in the schema (the `.sql` files; without them,
  the ORM models);
- SQL and ORM: every table and column that code's SQL strings and ORM models refer to exists in
  the schema (or, without one, in the contract); one the contract declares but the schema lacks
  is the schema's mismatch, already reported by the table check;
- ownership: each task writes only under the prefixes the contract gives it (a task it does not
  name may write anywhere).

The contract is the arbiter: a mismatch names the task whose file deviates from it (`deviating`)
and the tasks on the other side of the interface (`concerned`), with its evidence: file, line,
what was found, what was expected.
"""

import ast
import difflib
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from ..verifiers.js_balance import js_imbalance
from .calls import Call, is_test_file, js_calls, python_calls
from .contract import endpoint_label, owns, paths_match, segments, show_path
from .js_scan import tokenize
from .orm import OrmTable, class_index, orm_tables
from .routes import (
    ANY_METHOD,
    JS_SUFFIXES,
    Route,
    RouteGraph,
    add_javascript,
    add_nextjs,
    add_python,
    routes_served,
)
from .sql_refs import SqlRef, js_sql_strings, python_created_tables, python_sql_strings, references
from .sql_schema import Schema, bare, read_schema

SYSTEM_TABLES = {
    "sqlite_master",
    "sqlite_sequence",
    "sqlite_schema",
    "information_schema",
    "pg_catalog",
    "dual",
}
INTERFACE, OWNERSHIP = "interface", "ownership"


@dataclass
class Mismatch:
    kind: str  # "interface" or "ownership"
    check: str  # endpoint-not-served, call-undeclared, call-method, table-missing, column-missing, …
    file: str | None
    line: int | None
    found: str
    expected: str
    deviating: str | None  # the task whose file deviates from the contract
    concerned: list[str] = field(default_factory=list)  # the tasks on the other side
    inherited: bool = False  # in a file of the project's base that the execution did not change
    # The contract entry it misses ("GET /api/items", "table items", "column items.name"), if one.
    subject: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else (self.file or "the project")


@dataclass
class Report:
    checks: int = 0
    passed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # what was read: routes, calls, tables, …
    notes: list[str] = field(default_factory=list)

    def count(self, ok: bool) -> None:
        self.checks += 1
        self.passed += ok

    def as_dict(self) -> dict:
        return {
            "checks": self.checks,
            "passed": self.passed,
            "failed": self.checks - self.passed,
            "counts": self.counts,
            "mismatches": [m.as_dict() for m in self.mismatches],
            "notes": self.notes[:20],
        }


@dataclass
class Tree:
    """A project tree parsed once for every check."""

    files: dict[str, str]
    python: dict[str, ast.AST] = field(default_factory=dict)
    javascript: dict[str, list] = field(default_factory=dict)
    unreadable: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # path → (line, why)

    @classmethod
    def parse(cls, files: dict[str, str]) -> "Tree":
        tree = cls(files)
        for path, content in files.items():
            suffix = PurePosixPath(path).suffix.lower()
            if suffix == ".py":
                try:
                    tree.python[path] = ast.parse(content, filename=path)
                except SyntaxError as exc:
                    tree.unreadable[path] = (exc.lineno, f"Python syntax error: {exc.msg}")
                except ValueError as exc:  # NUL bytes
                    tree.unreadable[path] = (None, f"Python source that cannot be parsed: {exc}")
            elif suffix in JS_SUFFIXES:
                jsx = suffix in (".jsx", ".tsx")
                # The tokenizer reads anything; the balance scan tells a file cut short or broken.
                problem = js_imbalance(content, jsx=jsx)
                if problem is not None:
                    tree.unreadable[path] = (problem[1], f"JavaScript that cannot be parsed: {problem[0]}")
                tree.javascript[path] = tokenize(content, jsx=jsx)
        return tree


PY_WEB_FRAMEWORKS = {
    "fastapi",
    "flask",
    "django",
    "ninja",
    "starlette",
    "aiohttp",
    "tornado",
    "bottle",
    "sanic",
    "falcon",
    "quart",
    "litestar",
}
JS_WEB_FRAMEWORKS = {
    "express",
    "koa",
    "@koa/router",
    "koa-router",
    "fastify",
    "hono",
    "@nestjs/core",
    "next/server",
}


def _imports_python_framework(module: ast.AST) -> bool:
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in PY_WEB_FRAMEWORKS for name in names):
            return True
    return False


def _imports_js_framework(tokens: list) -> bool:
    for i, token in enumerate(tokens):
        if token.kind != "str" or token.value not in JS_WEB_FRAMEWORKS or i == 0:
            continue
        before = tokens[i - 1].value
        if before in ("from", "import") or (
            before == "(" and i > 1 and tokens[i - 2].value in ("require", "import")
        ):
            return True
    return False


def backend_files(tree: Tree, routes: list[Route]) -> list[str]:
    """The files that make the tree a backend: those a route was read from, those that import a web
    framework, and Python the reader could not parse (it may be the server; nobody can tell)."""
    found = {route.file for route in routes}
    found.update(p for p, m in tree.python.items() if not is_test_file(p) and _imports_python_framework(m))
    found.update(p for p, t in tree.javascript.items() if not is_test_file(p) and _imports_js_framework(t))
    found.update(
        p for p in tree.unreadable if PurePosixPath(p).suffix.lower() == ".py" and not is_test_file(p)
    )
    return sorted(found)


def declared_subjects(contract: dict) -> set[str]:
    """The `subject` of every entry a contract declares: its endpoints, tables and columns."""
    subjects = {endpoint_label(e) for e in contract.get("endpoints", [])}
    for table in contract.get("tables", []):
        name = bare(table["name"])
        subjects.add(f"table {name}")
        subjects.update(f"column {name}.{column.lower()}" for column in table.get("columns", {}))
    return subjects


def check_tree(
    contract: dict, files: dict[str, str], owner_of: dict[str, str], writes: dict[str, list[str]]
) -> Report:
    report = Report()
    tree = Tree.parse(files)
    routes, notes = read_routes(tree)
    report.notes += notes
    calls = [c for c in read_calls(tree) if not is_test_file(c.file)]
    schema = read_schema(files)
    report.notes += schema.errors
    classes = class_index(tree.python)
    orm = [t for path, module in sorted(tree.python.items()) for t in orm_tables(path, module, classes)]
    # Tables the code makes for itself and no schema or contract has (a migrations ledger) are its
    # own business, like SQLite's.
    own = (
        {
            table
            for path, module in tree.python.items()
            if not is_test_file(path)
            for table in python_created_tables(module)
        }
        - set(schema.tables)
        - {bare(t["name"]) for t in contract.get("tables", [])}
    )
    sql = [
        ref
        for item in read_sql_strings(tree)
        if not is_test_file(item.file)
        for ref in references(item)
        if bare(ref.table.split("|")[0]) not in SYSTEM_TABLES | own
    ]
    report.counts = {
        "routes": len(routes),
        "calls": len(calls),
        "tables": len(schema.tables),
        "orm_models": len(orm),
        "sql_references": len(sql),
        "unreadable": len(tree.unreadable),
    }
    owner = owner_of.get
    check_readable(report, tree, owner)
    check_endpoints(report, contract, routes, calls, owner, backend_files(tree, routes), notes)
    check_calls(report, contract, routes, calls, owner)
    check_tables(report, contract, schema, orm, sql, owner)
    check_ownership(report, contract, writes, owner_of)
    return report


def read_routes(tree: Tree) -> tuple[list[Route], list[str]]:
    graph = RouteGraph(files=set(tree.files))
    for path, module in tree.python.items():
        add_python(graph, path, module)
    for path, tokens in tree.javascript.items():
        add_javascript(graph, path, tokens)
        add_nextjs(graph, path, tokens)
    return routes_served(graph)


def read_calls(tree: Tree) -> list[Call]:
    calls = []
    for path, tokens in sorted(tree.javascript.items()):
        calls += js_calls(path, tokens)
    for path, module in sorted(tree.python.items()):
        calls += python_calls(path, module)
    return calls


def read_sql_strings(tree: Tree) -> list:
    found = []
    for path, module in sorted(tree.python.items()):
        found += python_sql_strings(path, module)
    for path, tokens in sorted(tree.javascript.items()):
        found += js_sql_strings(path, tokens)
    return found


def _owners(owner, paths) -> list[str]:
    return sorted({o for o in map(owner, paths) if o})


def _not_served(endpoint: dict, file: str, found: str, calls, owner) -> Mismatch:
    """An endpoint no route serves, blamed on `file`'s owner; its callers' owners are concerned."""
    callers = [c.file for c in calls if paths_match(segments(c.path), segments(endpoint["path"]))]
    return Mismatch(
        INTERFACE,
        "endpoint-not-served",
        file,
        None,
        found,
        f"{endpoint_label(endpoint)} served, as the contract declares",
        owner(file),
        [o for o in _owners(owner, callers) if o != owner(file)],
        subject=endpoint_label(endpoint),
    )


def _closest(target: str, candidates: list[str], n: int = 3) -> list[str]:
    scored = sorted(candidates, key=lambda c: -difflib.SequenceMatcher(None, target, c).ratio())
    return scored[:n]


# ---------------------------------------------------------------- endpoints and calls


def _serves(route: Route, method: str, path: tuple[str, ...]) -> bool:
    methods = {route.method} | ({"GET"} if route.method == "HEAD" else set())
    return (route.method == ANY_METHOD or method in methods) and paths_match(segments(route.path), path)


def check_readable(report: Report, tree: Tree, owner) -> None:
    """A source file the reader cannot parse: its routes, calls and SQL are unknown."""
    for path, (line, why) in sorted(tree.unreadable.items()):
        report.count(False)
        report.mismatches.append(
            Mismatch(
                INTERFACE,
                "file-unreadable",
                path,
                line,
                why,
                "source that parses, so its routes, calls and SQL can be checked against the contract",
                owner(path),
            )
        )


def check_endpoints(
    report: Report,
    contract: dict,
    routes: list[Route],
    calls: list[Call],
    owner,
    backend: list[str],
    route_notes: list[str],
) -> None:
    endpoints = contract.get("endpoints", [])
    if not endpoints:
        return
    if not backend:
        report.notes.append(
            "no backend code in this tree (no route, no web framework imported): "
            "the contract's endpoints are not checked against it"
        )
        return
    if not routes:
        # Backend code, but not one route read from it: nothing shows the endpoints served.
        unread = "; ".join(route_notes[:3])
        found = f"no route could be read from the backend code ({', '.join(backend[:5])})" + (
            f": {unread}" if unread else ""
        )
        for endpoint in endpoints:
            report.count(False)
            report.mismatches.append(_not_served(endpoint, backend[0], found, calls, owner))
        return
    by_file: dict[str, int] = {}
    for route in routes:
        by_file[route.file] = by_file.get(route.file, 0) + 1
    main_file = max(sorted(by_file), key=by_file.__getitem__)
    unfollowed = [n for n in route_notes if "could not be followed" in n or "not counted" in n]
    for endpoint in endpoints:
        path = segments(endpoint["path"])
        ok = any(_serves(route, endpoint["method"], path) for route in routes)
        report.count(ok)
        if ok:
            continue
        labels = {f"{r.method} {show_path(segments(r.path))}": r for r in routes}
        near = _closest(endpoint_label(endpoint), list(labels))
        nearest = labels[near[0]] if near else None
        found = (
            "no route serves it; the closest routes: "
            + ", ".join(f"{label} ({labels[label].file}:{labels[label].line})" for label in near)
            + (f" ({'; '.join(unfollowed[:2])})" if unfollowed else "")
        )
        report.mismatches.append(
            _not_served(endpoint, nearest.file if nearest else main_file, found, calls, owner)
        )


def check_calls(report: Report, contract: dict, routes: list[Route], calls: list[Call], owner) -> None:
    endpoints = contract.get("endpoints", [])
    if not endpoints:
        return
    scope = {segments(e["path"])[:1] for e in endpoints}
    backends = _owners(owner, {r.file for r in routes})
    declared = [(e, segments(e["path"])) for e in endpoints]
    for call in calls:
        path = segments(call.path)
        if path[:1] not in scope:
            continue
        matching = [e for e, p in declared if paths_match(p, path)]
        deviating = owner(call.file)
        concerned = [o for o in backends if o != deviating]
        if not matching:
            same = [endpoint_label(e) for e in endpoints if call.method in (None, e["method"])] or [
                endpoint_label(e) for e in endpoints
            ]
            found = f"{call.method or '?'} {show_path(path)}"
            report.count(False)
            report.mismatches.append(
                Mismatch(
                    INTERFACE,
                    "call-undeclared",
                    call.file,
                    call.line,
                    f"calls {found} ({call.url}), which the contract does not declare",
                    "a declared endpoint, e.g. " + " or ".join(_closest(found, same)),
                    deviating,
                    concerned,
                )
            )
        elif call.method and not any(e["method"] == call.method for e in matching):
            methods = "|".join(sorted({e["method"] for e in matching}))
            report.count(False)
            report.mismatches.append(
                Mismatch(
                    INTERFACE,
                    "call-method",
                    call.file,
                    call.line,
                    f"calls {call.method} {show_path(path)}",
                    f"{methods} {matching[0]['path']}, as the contract declares",
                    deviating,
                    concerned,
                )
            )
        else:
            report.count(True)


# ---------------------------------------------------------------- tables, SQL and ORM


@dataclass
class _SchemaView:
    """The schema the checks compare with: the SQL files' tables, else the ORM's, else none."""

    tables: dict[str, dict[str, int | None]]  # table → column → line; "*" accepts any column
    files: dict[str, tuple[str, int | None]]  # table → (file, line)
    source: str  # "sql", "orm" or ""
    main_file: str | None

    def has(self, table: str, column: str | None) -> bool:
        columns = self.tables.get(table)
        if columns is None:
            return False
        return column is None or "*" in columns or column in columns


def _schema_view(schema: Schema, orm: list[OrmTable]) -> _SchemaView:
    if schema.tables:
        return _SchemaView(
            {name: dict(t.columns) for name, t in schema.tables.items()},
            {name: (t.file, t.line) for name, t in schema.tables.items()},
            "sql",
            schema.main_file,
        )
    if orm:
        tables = {bare(t.name): dict(t.columns) for t in orm}
        files = {bare(t.name): (t.file, t.line) for t in orm}
        counts: dict[str, int] = {}
        for t in orm:
            counts[t.file] = counts.get(t.file, 0) + 1
        return _SchemaView(tables, files, "orm", max(sorted(counts), key=counts.__getitem__))
    return _SchemaView({}, {}, "", None)


def check_tables(
    report: Report, contract: dict, schema: Schema, orm: list[OrmTable], sql: list[SqlRef], owner
) -> None:
    view = _schema_view(schema, orm)
    declared = {
        bare(t["name"]): {c.lower(): kind for c, kind in t["columns"].items()}
        for t in contract.get("tables", [])
    }
    # Code that uses each table and column, for the mismatches' other side.
    users: dict[tuple[str, str | None], set[str]] = {}
    for ref in sql:
        for table in ref.table.split("|"):
            users.setdefault((table, ref.column), set()).add(ref.file)
            users.setdefault((table, None), set()).add(ref.file)
    if view.source == "sql":
        for model in orm:
            for column in [None, *model.columns]:
                users.setdefault((bare(model.name), column), set()).add(model.file)
    mismatch_index: dict[tuple[str, str | None], Mismatch] = {}

    if view.source and declared:
        for table, columns in declared.items():
            ok = table in view.tables
            report.count(ok)
            if not ok:
                code = users.get((table, None), set())
                file = view.main_file
                mismatch = Mismatch(
                    INTERFACE,
                    "table-missing",
                    file,
                    None,
                    "the schema creates " + (", ".join(sorted(view.tables)) or "no table") + f", not {table}",
                    f"table {table} ({', '.join(columns)}), as the contract declares",
                    owner(file) if file else None,
                    [o for o in _owners(owner, code) if o != owner(file)],
                    subject=f"table {table}",
                )
                report.mismatches.append(mismatch)
                mismatch_index[(table, None)] = mismatch
                continue
            file, line = view.files[table]
            for column, kind in columns.items():
                ok = view.has(table, column)
                report.count(ok)
                if ok:
                    continue
                code = users.get((table, column), set())
                mismatch = Mismatch(
                    INTERFACE,
                    "column-missing",
                    file,
                    line,
                    f"{table} has columns {', '.join(c for c in view.tables[table] if c != '*')}"
                    f"; no {column}",
                    f"{table}.{column} {kind}, as the contract declares",
                    owner(file),
                    [o for o in _owners(owner, code) if o != owner(file)],
                    subject=f"column {table}.{column}",
                )
                report.mismatches.append(mismatch)
                mismatch_index[(table, column)] = mismatch

    # What code refers to: against the schema, or without one, against the contract.
    if view.source:
        known, where = view, "schema"
    elif declared:
        known = _SchemaView({t: dict.fromkeys(c) for t, c in declared.items()}, {}, "contract", None)
        where = "contract"
    else:
        return
    references_ = [(r.file, r.line, r.table, r.column, r.sql, "sql") for r in sql]
    if view.source == "sql":
        for model in orm:
            references_.append(
                (model.file, model.line, bare(model.name), None, f"model {model.model}", "orm")
            )
            references_ += [
                (model.file, line, bare(model.name), column, f"model {model.model}", "orm")
                for column, line in model.columns.items()
            ]
    reported: set[tuple] = set()
    for file, line, tables, column, text, source in references_:
        candidates = tables.split("|")
        if any(known.has(t, column) for t in candidates):
            report.count(True)
            continue
        # Declared by the contract but missing from the schema: the schema's mismatch, above.
        declared_here = [t for t in candidates if t in declared and (column is None or column in declared[t])]
        if known.source != "contract" and declared_here:
            key = (declared_here[0], column)
            mismatch = mismatch_index.get(key) or mismatch_index.get((declared_here[0], None))
            if mismatch and owner(file) and owner(file) not in mismatch.concerned + [mismatch.deviating]:
                mismatch.concerned.append(owner(file))
            continue
        if (file, tables, column) in reported:
            continue
        reported.add((file, tables, column))
        report.count(False)
        schema_owner = owner(known.main_file) if known.main_file else None
        if column is None:
            found = f"{text} uses table {tables}"
            expected = f"a table of the {where}: " + ", ".join(sorted(known.tables))
        else:
            label = " or ".join(candidates)
            found = f"{text} uses column {label}.{column}"
            have = sorted({c for t in candidates for c in known.tables.get(t, {}) if c != "*"})
            expected = f"a column of {label} in the {where}: " + (", ".join(have) or "(table unknown)")
        report.mismatches.append(
            Mismatch(
                INTERFACE,
                f"{source}-{'table' if column is None else 'column'}",
                file,
                line,
                found,
                expected,
                owner(file),
                [o for o in [schema_owner] if o and o != owner(file)],
            )
        )


# ---------------------------------------------------------------- ownership


def check_ownership(
    report: Report, contract: dict, writes: dict[str, list[str]], owner_of: dict[str, str]
) -> None:
    ownership = contract.get("ownership", {})
    for task, paths in sorted(writes.items()):
        prefixes = ownership.get(task)
        if prefixes is None:
            continue
        for path in sorted(paths):
            ok = owns(prefixes, path)
            report.count(ok)
            if ok:
                continue
            rightful = sorted(t for t, p in ownership.items() if t != task and owns(p, path))
            report.mismatches.append(
                Mismatch(
                    OWNERSHIP,
                    "path-not-owned",
                    path,
                    None,
                    f"{task} writes {path}",
                    f"{task} writes only under {', '.join(prefixes) or 'nothing'}"
                    + (f"; {path} belongs to {', '.join(rightful)}" if rightful else ""),
                    task,
                    rightful,
                )
            )
