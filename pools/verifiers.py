"""Real-tool checks of agent outputs: parsers, bandit and a scratch SQLite database.

Pure functions over the agent contract's `files` list (DESIGN.md): no Django, no network, and
generated code is never executed on the host (bandit reads it; SQL runs only inside an in-memory
SQLite database that may not attach files).
"""

import json
import re
import sqlite3
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import sqlglot
import yaml
from sqlglot import exp

BANDIT_SEVERITY = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
SCHEMA_TIMEOUT_SEC = 5.0
INTERRUPTED = f"interrupted after {SCHEMA_TIMEOUT_SEC:g}s"
JS_SUFFIXES = {".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs"}
# Advice per bandit test id for the findings agents most often trigger; others link bandit's docs.
BANDIT_ADVICE = {
    "B102": "Do not exec() strings; call the code directly.",
    "B105": "Read secrets from the environment or a secret store, never from source code.",
    "B106": "Read secrets from the environment or a secret store, never from source code.",
    "B107": "Read secrets from the environment or a secret store, never from source code.",
    "B108": "Use tempfile.mkstemp()/TemporaryDirectory() instead of fixed paths under /tmp.",
    "B301": "Do not unpickle untrusted data; use JSON.",
    "B303": "Use SHA-256 or better (hashlib.sha256), and a password hash (argon2, bcrypt) for passwords.",
    "B324": "Use SHA-256 or better (hashlib.sha256), and a password hash (argon2, bcrypt) for passwords.",
    "B307": "Use ast.literal_eval() for literals, or parse the input explicitly; never eval() input.",
    "B311": "Use the secrets module for tokens, keys and anything security-relevant.",
    "B501": "Keep TLS certificate verification on (verify=True).",
    "B506": "Use yaml.safe_load().",
    "B602": "Pass an argument list without shell=True (subprocess.run([...], check=True)).",
    "B605": "Pass an argument list to subprocess.run() instead of a shell string.",
    "B608": "Use parameterized queries: cursor.execute(sql, params) or the ORM.",
    "B201": "Never run Flask with debug=True in production.",
}
# Statements with no SQLite meaning that do not change the tables and columns being checked.
SKIPPED_CREATE_KINDS = {"TYPE", "EXTENSION", "SCHEMA", "FUNCTION", "PROCEDURE", "SEQUENCE", "DOMAIN", "ROLE"}
POSTGRES_MARKERS = re.compile(
    r"\b(BIG|SMALL)?SERIAL\b|\bJSONB\b|\bTIMESTAMPTZ\b|\bWITH(OUT)? TIME ZONE\b|::|\bgen_random_uuid\b"
    r"|\bCREATE\s+(EXTENSION|TYPE)\b|\bUSING\s+(GIN|GIST|BTREE|HASH|BRIN)\b",
    re.IGNORECASE,
)
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# sqlglot is not safe to use from several threads at once: checks running together in a fresh
# worker turned a valid schema into SQL that SQLite rejects (reproduced with eight threads). Its
# work is pure Python under the GIL anyway, so taking turns costs nothing.
_SQLGLOT = threading.Lock()


@dataclass
class Finding:
    """One problem found in an output, in the agent contract's finding shape plus where it came from."""

    severity: str
    title: str
    file: str | None = None
    line: int | None = None
    recommendation: str = ""
    source: str = "verifier"  # "bandit", "verifier" or "schema"
    rule: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SchemaReport:
    """What applying a schema to a scratch SQLite database showed."""

    applied: bool
    tables: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    translated_from: str | None = None  # the dialect transpiled to SQLite, if any
    notes: list[str] = field(default_factory=list)  # statements left out as having no SQLite meaning

    @property
    def accepted(self) -> bool:
        """Applied, and nothing high or critical found."""
        return self.applied and not any(f.severity in ("critical", "high") for f in self.findings)

    def as_dict(self) -> dict:
        return {
            "applied": self.applied,
            "accepted": self.accepted,
            "tables": self.tables,
            "errors": self.errors,
            "findings": [f.as_dict() for f in self.findings],
            "translated_from": self.translated_from,
            "notes": self.notes,
        }


def path_problem(path: object) -> str | None:
    """Why a file path from a model may not be written under the project root, or None if it may."""
    if not isinstance(path, str) or not path.strip():
        return "empty or missing path"
    if "\x00" in path:
        return "path contains a NUL byte"
    normalized = path.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        return "absolute path"
    if ".." in PurePosixPath(normalized).parts:
        return "path escapes the project with '..'"
    return None


def verify_files(files: list[dict]) -> list[Finding]:
    """Check every file of an agent output: safe path, and content that parses for its type."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        problem = path_problem(path)
        if problem:
            findings.append(
                Finding(
                    "high",
                    f"Unsafe file path: {problem}",
                    file=_printable(path),
                    rule="unsafe-path",
                    recommendation="Use a relative path inside the project, without '..'.",
                )
            )
            continue
        content = entry.get("content")
        if not isinstance(content, str):
            findings.append(
                Finding(
                    "high",
                    "File content is not text",
                    file=path,
                    rule="bad-content",
                    recommendation="Return the file's content as a string.",
                )
            )
            continue
        if path in seen:
            findings.append(
                Finding(
                    "medium",
                    "The same file is written twice in one output",
                    file=path,
                    rule="duplicate-file",
                    recommendation="Merge both versions into one file.",
                )
            )
        seen.add(path)
        finding = _parse_check(path, content)
        if finding is not None:
            findings.append(finding)
    return findings


def _printable(path: object) -> str | None:
    return path.replace("\x00", "\\0") if isinstance(path, str) else None


def _parse_check(path: str, content: str) -> Finding | None:
    suffix = PurePosixPath(path).suffix.lower()
    try:
        if suffix == ".py":
            compile(content, path, "exec", dont_inherit=True)
        elif suffix == ".json":
            json.loads(content)
        elif suffix in (".yaml", ".yml"):
            list(yaml.safe_load_all(content))
        elif suffix == ".toml":
            tomllib.loads(content)
        elif suffix == ".sql":
            return _sql_parse_check(path, content)
        elif suffix in JS_SUFFIXES:
            return _js_balance_check(path, content, jsx=suffix in (".jsx", ".tsx"))
    except SyntaxError as exc:
        return _syntax_finding(path, f"Python syntax error: {exc.msg}", exc.lineno)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return _syntax_finding(path, f"Invalid YAML: {exc}".split("\n")[0], mark.line + 1 if mark else None)
    except tomllib.TOMLDecodeError as exc:  # before ValueError, its base class
        match = re.search(r"line (\d+)", str(exc))
        return _syntax_finding(path, f"Invalid TOML: {exc}", int(match.group(1)) if match else None)
    except ValueError as exc:  # json.JSONDecodeError, and NUL bytes in Python source
        return _syntax_finding(path, f"Invalid {suffix[1:].upper()}: {exc}", getattr(exc, "lineno", None))
    return None


def _syntax_finding(path: str, title: str, line: int | None, severity: str = "high") -> Finding:
    return Finding(
        severity,
        title,
        file=path,
        line=line,
        rule="syntax",
        recommendation="Fix the syntax so the file parses.",
    )


def _sql_parse_check(path: str, content: str) -> Finding | None:
    first_error = None
    # The dialect is unknown; a file any common dialect parses is fine.
    for dialect in (None, "postgres", "mysql", "sqlite"):
        try:
            with _SQLGLOT:
                sqlglot.parse(content, read=dialect)
            return None
        except sqlglot.errors.SqlglotError as exc:
            first_error = first_error or exc
    detail = (getattr(first_error, "errors", None) or [{}])[0]
    message = detail.get("description") or str(first_error).split("\n")[0]
    return _syntax_finding(path, f"Invalid SQL: {message}", detail.get("line"))


def _js_balance_check(path: str, content: str, *, jsx: bool) -> Finding | None:
    """A cheap bracket and quote balance scan, not a parser: no JS toolchain is installed.

    It skips comments, strings, template literals (with ${} nesting) and regex literals, so it
    catches truncated replies and unbalanced edits, not every syntax error. JSX text may hold
    apostrophes, so in .jsx/.tsx a quote left open at the end of a line is taken as text.
    """
    problem = _js_imbalance(content, jsx=jsx)
    if problem is None:
        return None
    message, line = problem
    return _syntax_finding(
        path, f"Unbalanced source (bracket/quote check): {message}", line, severity="medium"
    )


def _js_imbalance(text: str, *, jsx: bool) -> tuple[str, int] | None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []  # opener ("(", "[", "{" or "${") and its line
    i, n, line = 0, len(text), 1
    last = ""  # last significant token character, to tell a regex from a division
    in_template = False
    while i < n:
        if in_template:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "\n":
                line += 1
            if c == "`":
                in_template, last = False, "`"
            elif text.startswith("${", i):
                stack.append(("${", line))
                in_template, last = False, "{"
                i += 1
            i += 1
            continue
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return "unterminated /* comment", line
            line += text.count("\n", i, end)
            i = end + 2
        elif c in "'\"":
            j = i + 1
            while j < n and text[j] not in (c, "\n"):
                j += 2 if text[j] == "\\" else 1
            if j >= n or text[j] == "\n":
                if not jsx:
                    return f"unterminated {c} string", line
                i = j
            else:
                i, last = j + 1, c
        elif c == "`":
            in_template = True
            i += 1
        elif (
            c == "/"
            and not (jsx and (last == "<" or text.startswith("/>", i)))
            and (last == "" or last in "(,=:[!&|?{};+-*%<>~^" or _ends_with_keyword(text, i))
        ):  # in JSX, `</tag>` and `/>` close tags, they start no regex
            j = i + 1
            in_class = False
            while j < n and text[j] != "\n" and (in_class or text[j] != "/"):
                if text[j] == "\\":
                    j += 1
                elif text[j] == "[":
                    in_class = True
                elif text[j] == "]":
                    in_class = False
                j += 1
            # A "regex" running into the end of the line was a division after all.
            i, last = (j + 1, "/") if j < n and text[j] == "/" else (i + 1, "/")
        elif c in "([{":
            stack.append((c, line))
            last = c
            i += 1
        elif c in ")]}":
            if not stack:
                return f"unexpected '{c}'", line
            opener, opened_at = stack.pop()
            if opener == "${" and c == "}":
                in_template = True
            elif opener != pairs[c]:
                return f"'{c}' closes '{opener}' opened on line {opened_at}", line
            last = c
            i += 1
        else:
            last = c
            i += 1
    if in_template:
        return "unterminated template literal", line
    if stack:
        opener, opened_at = stack[-1]
        return f"'{opener}' opened on line {opened_at} is never closed", opened_at
    return None


def _ends_with_keyword(text: str, i: int) -> bool:
    match = re.search(r"(\w+)\s*$", text[max(0, i - 12) : i])
    return bool(match) and match.group(1) in {
        "return",
        "typeof",
        "case",
        "do",
        "else",
        "in",
        "of",
        "new",
        "delete",
        "void",
        "throw",
        "yield",
        "await",
    }


def run_bandit(files: list[dict]) -> list[Finding]:
    """Bandit's findings on the Python files of an output (files are written to a temp dir, never run)."""
    python_files = [
        f
        for f in files
        if isinstance(f, dict)
        and path_problem(f.get("path")) is None
        and isinstance(f.get("content"), str)
        and f["path"].lower().endswith(".py")
    ]
    if not python_files:
        return []
    with tempfile.TemporaryDirectory(prefix="openclaw-bandit-") as tmp:
        root = Path(tmp)
        for f in python_files:
            target = root / f["path"].replace("\\", "/")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f["content"], encoding="utf-8", errors="replace")
            except OSError:
                continue  # a path clashing with another file's directory; verify_files reports the output
        try:
            report = _bandit_in_process(root)
        except Exception as exc:  # bandit itself failed: say so rather than pass the code as clean
            return [
                Finding(
                    "medium",
                    f"Security scan did not run: {type(exc).__name__}",
                    source="bandit",
                    rule="bandit-error",
                    recommendation="Re-run the security audit.",
                )
            ]
        return [_bandit_finding(result, root) for result in report]


def _bandit_in_process(root: Path) -> list[dict]:
    """bandit's library API: the same checks as its command line without starting an interpreter
    per output (which cost ~150 ms of CPU each). It only parses the files; nothing is executed."""
    from bandit.core import config as bandit_config
    from bandit.core import manager as bandit_manager

    # B101 (assert) flags every generated test file; asserts there are the point.
    manager = bandit_manager.BanditManager(
        bandit_config.BanditConfig(), "file", quiet=True, profile={"include": set(), "exclude": {"B101"}}
    )
    manager.discover_files([str(root)], recursive=True)
    manager.run_tests()
    return [issue.as_dict() for issue in manager.get_issue_list()]


def _bandit_finding(result: dict, root: Path) -> Finding:
    test_id = result.get("test_id", "")
    try:
        file = Path(result["filename"]).relative_to(root).as_posix()
    except (KeyError, ValueError):
        file = result.get("filename")
    advice = BANDIT_ADVICE.get(test_id) or f"See {result.get('more_info', 'the bandit documentation')}."
    return Finding(
        severity=BANDIT_SEVERITY.get(result.get("issue_severity", ""), "low"),
        title=f"{result.get('issue_text', '').strip()} ({test_id} {result.get('test_name', '')})",
        file=file,
        line=result.get("line_number"),
        recommendation=advice,
        source="bandit",
        rule=test_id,
    )


def check_schema(sql: str, dialect: str | None = None, *, path: str | None = None) -> SchemaReport:
    """Apply a schema to a scratch in-memory SQLite database and report its tables and missing FK indexes.

    PostgreSQL (named, or recognised by SERIAL, JSONB, TIMESTAMPTZ, `::` and the like) and any SQL
    that SQLite rejects as written are transpiled with sqlglot first. A schema that does not apply
    is not accepted; neither is one whose foreign-key columns lack an index.
    """
    source = (dialect or "").lower() or None
    if source == "postgresql":
        source = "postgres"
    wants_translation = source not in (None, "sqlite") or (source is None and POSTGRES_MARKERS.search(sql))
    report = SchemaReport(applied=False)
    if not wants_translation:
        connection, error = _apply([sql])
        if error is None:
            report.applied = True
            _describe(connection, report, path)
            return report
        report.errors.append(f"SQLite: {error}")
        if error == INTERRUPTED:
            return report  # translating would not make it faster
    read = source if source not in (None, "sqlite") else "postgres"
    try:
        statements, report.notes = _sqlite_statements(sql, read)
    except sqlglot.errors.SqlglotError as exc:
        detail = (getattr(exc, "errors", None) or [{}])[0]
        line = f" (line {detail['line']})" if detail.get("line") else ""
        report.errors.append(f"{read} parse error: {detail.get('description') or exc}{line}")
        return report
    if not statements:
        report.errors.append("no SQL statements found")
        return report
    connection, error = _apply(statements)
    report.translated_from = read
    if error is not None:
        report.errors.append(f"SQLite after translation from {read}: {error}")
        return report
    report.errors.clear()  # the first, untranslated try is moot now
    report.applied = True
    _describe(connection, report, path)
    return report


def _sqlite_statements(sql: str, read: str) -> tuple[list[str], list[str]]:
    """SQLite versions of a schema's statements, and notes on the statements left out."""
    with _SQLGLOT:
        return _translate_to_sqlite(sql, read)


def _translate_to_sqlite(sql: str, read: str) -> tuple[list[str], list[str]]:
    tables: dict[str, exp.Create] = {}
    kept: list[exp.Expression] = []
    notes: list[str] = []
    for statement in sqlglot.parse(sql, read=read):
        if statement is None:
            continue
        for table in statement.find_all(exp.Table):
            # One scratch database: schema-qualified names (public.users) all land in main.
            table.set("db", None)
            table.set("catalog", None)
        kind = statement.args.get("kind") if isinstance(statement, exp.Create) else None
        if isinstance(statement, exp.Create) and kind == "TABLE" and isinstance(statement.this, exp.Schema):
            tables[statement.this.this.name.lower()] = statement
            kept.append(statement)
            kept.extend(_extract_inline_indexes(statement))
            _drop_non_constant_defaults(statement)
        elif isinstance(statement, exp.Create) and kind == "INDEX":
            params = statement.this.args.get("params")
            if params is not None:
                params.set("using", None)  # GIN, BTREE...: SQLite has one kind of index
                for ordered in list(params.find_all(exp.Ordered)):
                    ordered.replace(ordered.this)  # SQLite indexes take no NULLS FIRST/LAST
            kept.append(statement)
        elif isinstance(statement, exp.Alter) and _fold_constraints(statement, tables):
            continue
        elif isinstance(statement, (exp.Command, exp.Comment, exp.Grant)) or kind in SKIPPED_CREATE_KINDS:
            notes.append(f"skipped: {statement.sql(dialect=read)[:120]}")
        else:
            kept.append(statement)
    return [s.sql(dialect="sqlite") for s in kept], notes


def _extract_inline_indexes(create: exp.Create) -> list[exp.Expression]:
    """MySQL's `KEY idx (col)` inside CREATE TABLE, as separate CREATE INDEX statements."""
    schema = create.this
    table = schema.this.name
    indexes = []
    for number, inline in enumerate(list(schema.find_all(exp.IndexColumnConstraint)), start=1):
        columns = [c.name for c in inline.expressions]
        name = inline.this.name if isinstance(inline.this, exp.Identifier) else f"{table}_idx{number}"
        inline.pop()
        indexes.append(
            sqlglot.parse_one(
                f"CREATE INDEX {_quote(name)} ON {_quote(table)} ({', '.join(_quote(c) for c in columns)})",
                read="sqlite",
            )
        )
    return indexes


def _drop_non_constant_defaults(create: exp.Create) -> None:
    # SQLite wants literal defaults (or parenthesised expressions it knows); the checks here do
    # not depend on defaults, so a default SQLite cannot take is dropped rather than failing.
    constant = (exp.Literal, exp.Boolean, exp.Null, exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime)
    for default in list(create.find_all(exp.DefaultColumnConstraint)):
        value = default.this
        if isinstance(value, exp.Neg):
            value = value.this
        if not isinstance(value, constant):
            default.parent.pop()
    for column in create.find_all(exp.ColumnDef):
        kind = column.args.get("kind")
        if isinstance(kind, exp.DataType) and kind.this in (
            exp.DataType.Type.SERIAL,
            exp.DataType.Type.BIGSERIAL,
            exp.DataType.Type.SMALLSERIAL,
        ):
            column.set("kind", exp.DataType.build("INTEGER"))


def _fold_constraints(alter: exp.Alter, tables: dict[str, exp.Create]) -> bool:
    """Move `ALTER TABLE t ADD [CONSTRAINT c] FOREIGN KEY/PRIMARY KEY/UNIQUE` into t's CREATE TABLE.

    SQLite cannot add constraints to an existing table, and PostgreSQL dumps declare their foreign
    keys exactly this way. Returns False when the statement is something else.
    """
    create = tables.get(alter.this.name.lower()) if isinstance(alter.this, exp.Table) else None
    actions = alter.args.get("actions") or []
    if create is None or not actions or not all(isinstance(a, exp.AddConstraint) for a in actions):
        return False
    for action in actions:
        for constraint in action.expressions:
            create.this.append("expressions", constraint.copy())
    return True


def _apply(statements: list[str]) -> tuple[sqlite3.Connection, str | None]:
    """Run SQL in a fresh in-memory database that cannot touch files and stops after a few seconds."""
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA foreign_keys = ON")
    stop_at = time.monotonic() + SCHEMA_TIMEOUT_SEC
    # ATTACH (and VACUUM INTO, which attaches) would create files on the host.
    connection.set_authorizer(
        lambda action, *args: (
            sqlite3.SQLITE_DENY
            if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH)
            else sqlite3.SQLITE_OK
        )
    )
    connection.set_progress_handler(lambda: int(time.monotonic() > stop_at), 10_000)
    try:
        for statement in statements:
            connection.executescript(statement if statement.rstrip().endswith(";") else statement + ";")
        error = None
    except sqlite3.Error as exc:
        error = INTERRUPTED if "interrupted" in str(exc) else str(exc)
    finally:
        connection.set_authorizer(None)
        connection.set_progress_handler(None, 0)
    return connection, error


def _describe(connection: sqlite3.Connection, report: SchemaReport, path: str | None) -> None:
    report.tables = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    for table in report.tables:
        covered = _index_prefixes(connection, table)
        for columns in _foreign_keys(connection, table):
            # Covered when the key's columns lead an index, in any order.
            if any(set(prefix[: len(columns)]) == set(columns) for prefix in covered):
                continue
            shown = ", ".join(columns)
            name = f"idx_{table}_{'_'.join(columns)}"
            report.findings.append(
                Finding(
                    "high",
                    f"Foreign key {table}({shown}) has no index",
                    file=path,
                    source="schema",
                    rule="fk-without-index",
                    recommendation=f"CREATE INDEX {_quote(name)} ON {_quote(table)} "
                    f"({', '.join(_quote(c) for c in columns)});",
                )
            )


def _index_prefixes(connection: sqlite3.Connection, table: str) -> list[tuple[str, ...]]:
    """Column lists of the table's full (non-partial) indexes and of its primary key."""
    prefixes = []
    for _, name, _, _, partial in connection.execute(f"PRAGMA index_list({_quote(table)})"):
        if partial:
            continue
        columns = tuple(row[2] for row in connection.execute(f"PRAGMA index_info({_quote(name)})"))
        if all(columns):  # an expression index has no column names
            prefixes.append(columns)
    primary = sorted(
        (row[5], row[1]) for row in connection.execute(f"PRAGMA table_info({_quote(table)})") if row[5]
    )
    if primary:
        prefixes.append(tuple(column for _, column in primary))
    return prefixes


def _foreign_keys(connection: sqlite3.Connection, table: str) -> list[tuple[str, ...]]:
    """The referencing column lists of the table's foreign keys (composite keys kept together)."""
    keys: dict[int, list[tuple[int, str]]] = {}
    for row in connection.execute(f"PRAGMA foreign_key_list({_quote(table)})"):
        keys.setdefault(row[0], []).append((row[1], row[3]))
    return [tuple(column for _, column in sorted(columns)) for _, columns in sorted(keys.items())]


def _quote(name: str) -> str:
    return name if IDENTIFIER.match(name) else '"' + name.replace('"', '""') + '"'
