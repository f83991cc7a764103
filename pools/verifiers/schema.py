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
