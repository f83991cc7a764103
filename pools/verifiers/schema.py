"""Does a database schema apply, and are its foreign keys indexed: the schema is applied to a
scratch SQLite database in a child process (`scratch_sqlite`), after refusing what a schema file
may not hold (`schema_screen`) and translating other dialects (`sqlite_translation`)."""

from dataclasses import dataclass, field

import sqlglot

from . import scratch_sqlite
from .findings import Finding
from .schema_screen import screen_schema
from .sqlite_translation import POSTGRES_MARKERS, quote, sqlite_statements


@dataclass
class SchemaReport:
    """What applying a schema to a scratch SQLite database showed."""

    applied: bool
    tables: list[str] = field(default_factory=list)
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> its columns
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


def check_schema(sql: str, dialect: str | None = None, *, path: str | None = None) -> SchemaReport:
    """Apply a schema to a scratch in-memory SQLite database and report its tables and missing FK indexes.

    A schema holding statements that act on the engine or on files (PRAGMA, ATTACH, VACUUM,
    load_extension) is refused before anything runs. PostgreSQL (named, or recognised by SERIAL,
    JSONB, TIMESTAMPTZ, `::` and the like) and any SQL that SQLite rejects as written are
    transpiled with sqlglot first. A schema that does not apply is not accepted; neither is one
    whose foreign-key columns lack an index. Nothing here raises on what the SQL does.
    """
    report = SchemaReport(applied=False)
    screened = screen_schema(sql)
    if screened.refused:
        report.errors += screened.refused
        return report
    sql = screened.sql
    report.notes += screened.notes
    source = (dialect or "").lower() or None
    if source == "postgresql":
        source = "postgres"
    wants_translation = source not in (None, "sqlite") or (source is None and POSTGRES_MARKERS.search(sql))
    if not wants_translation:
        result = scratch_sqlite.apply_in_scratch([sql])
        if result.error is None:
            report.applied = True
            _describe(result, report, path)
            return report
        report.errors.append(f"SQLite: {result.error}")
        if result.stopped:
            return report  # translating would not make it smaller or faster
    read = source if source not in (None, "sqlite") else "postgres"
    try:
        statements, notes = sqlite_statements(sql, read)
    except sqlglot.errors.SqlglotError as exc:
        detail = (getattr(exc, "errors", None) or [{}])[0]
        line = f" (line {detail['line']})" if detail.get("line") else ""
        report.errors.append(f"{read} parse error: {detail.get('description') or exc}{line}")
        return report
    report.notes += notes
    if not statements:
        report.errors.append("no SQL statements found")
        return report
    # What sqlglot wrote is screened too: it is the SQL that runs.
    refused = [reason for statement in statements for reason in screen_schema(statement).refused]
    if refused:
        report.errors += refused
        return report
    result = scratch_sqlite.apply_in_scratch(statements)
    report.translated_from = read
    if result.error is not None:
        report.errors.append(f"SQLite after translation from {read}: {result.error}")
        return report
    report.errors.clear()  # the first, untranslated try is moot now
    report.applied = True
    _describe(result, report, path)
    return report


def _describe(result: scratch_sqlite.ScratchResult, report: SchemaReport, path: str | None) -> None:
    report.tables = result.tables
    report.columns = result.columns
    for table in report.tables:
        covered = result.covered.get(table, [])
        for columns in result.foreign_keys.get(table, []):
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
                    recommendation=f"CREATE INDEX {quote(name)} ON {quote(table)} "
                    f"({', '.join(quote(c) for c in columns)});",
                )
            )


MIGRATION_FOLDER = "migrations"
MIGRATION_ADVICE = "Write each migration against the schema before it (ALTER TABLE … ADD COLUMN …)."


def check_migrations(written: dict[str, str], before: dict[str, str]) -> dict[str, dict]:
    """Do the migrations bring a database made from the project's earlier schema up to its schema
    now? Per folder holding a schema (`database/`): its `.sql` files as they were (`before`, path →
    text), then the migrations `written` adds, are applied to a scratch database, and so is the
    schema as it is now (its files `written`, else as they were). The earlier migrations are not:
    the schema they started from already has what they add, as the generated backend's `db.py`
    holds (a database made from a schema has every column of it; its migrations are only
    recorded), and a database made before it has had them. Every
    column of the one must be in the other. A migration that does not apply, or leaves a column
    out, is high; a schema that adds columns to a table it had, with no migration adding them, is
    medium (a database made before lacks them). Keyed by the folder's first migration written, or
    its schema file: {"applied", "accepted", "migrations" (those written), "missing", "errors",
    "findings"}."""
    reports = {}
    for folder in sorted({_folder(path) for path in written if path.lower().endswith(".sql")}):
        old_schema = _schema_files(before, folder)
        new_schema = {**old_schema, **_schema_files(written, folder)}
        new_migrations = sorted(p for p in written if _is_migration_of(p, folder))
        if not old_schema or (not new_migrations and new_schema == old_schema):
            continue  # nothing to migrate from, or nothing changed
        migrated = check_schema(_script([*_texts(old_schema), *(written[p] for p in new_migrations)]))
        target = check_schema(_script(_texts(new_schema)))
        where = new_migrations[0] if new_migrations else min(_schema_files(written, folder))
        missing = [
            f"{table}.{column}"
            for table in (target.tables if migrated.applied and target.applied else [])
            if table in migrated.columns
            for column in target.columns.get(table, [])
            if column not in migrated.columns[table]
        ]
        findings = []
        if not migrated.applied:
            problem = "; ".join(migrated.errors)[:300]
            findings.append(
                Finding(
                    "high",
                    f"The migrations do not apply to a database made from the earlier schema: {problem}",
                    file=where,
                    source="schema",
                    rule="migration-apply",
                    recommendation=MIGRATION_ADVICE,
                )
            )
        elif missing:
            listed = ", ".join(missing[:10])
            table, column = missing[0].split(".", 1)
            if new_migrations:
                severity, rule = "high", "migration-incomplete"
                title = f"A database migrated from the earlier schema lacks {listed}"
            else:
                severity, rule = "medium", "migration-missing"
                title = f"The schema adds {listed} to tables a database made before has; no migration does"
            findings.append(
                Finding(
                    severity,
                    title,
                    file=where,
                    source="schema",
                    rule=rule,
                    recommendation=f"Add them in {folder}/{MIGRATION_FOLDER}/: ALTER TABLE "
                    f"{quote(table)} ADD COLUMN {quote(column)} …;",
                )
            )
        reports[where] = {
            "applied": migrated.applied,
            "accepted": migrated.applied and not any(f.severity == "high" for f in findings),
            "migrations": new_migrations,
            "missing": missing,
            "errors": migrated.errors if not migrated.applied else [],
            "findings": findings,
        }
    return reports


def is_migration(path: str) -> bool:
    """A `.sql` file in a `migrations` folder: it changes the schema the other files make."""
    return path.lower().endswith(".sql") and MIGRATION_FOLDER in path.lower().split("/")[:-1]


def _folder(path: str) -> str:
    """The folder of a schema file, or of the schema a migration changes."""
    parts = path.split("/")[:-1]
    lowered = [part.lower() for part in parts]
    return "/".join(parts[: lowered.index(MIGRATION_FOLDER)] if MIGRATION_FOLDER in lowered else parts)


def _is_migration_of(path: str, folder: str) -> bool:
    return is_migration(path) and _folder(path) == folder


def _schema_files(files: dict[str, str], folder: str) -> dict[str, str]:
    """The `.sql` files directly in `folder`: its schema."""
    return {
        path: text
        for path, text in files.items()
        if path.lower().endswith(".sql") and _folder(path) == folder and not is_migration(path)
    }


def _texts(files: dict[str, str]) -> list[str]:
    return [files[path] for path in sorted(files)]


def _script(texts: list[str]) -> str:
    """Files of SQL as one script, each ended by a `;`."""
    ended = [text.rstrip() if text.rstrip().endswith(";") else text.rstrip() + ";" for text in texts]
    return "\n".join(text for text in ended if text != ";")
