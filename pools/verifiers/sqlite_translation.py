"""Other dialects' schemas as SQLite statements (sqlglot), so one scratch database checks them all.

What SQLite cannot take and the checks do not depend on (extensions, types, grants, non-constant
defaults, index methods) is left out or simplified; constraints added by ALTER TABLE are folded
into their CREATE TABLE.
"""

import re

import sqlglot
from sqlglot import exp

from .sqlglot_lock import SQLGLOT

# Statements with no SQLite meaning that do not change the tables and columns being checked.
SKIPPED_CREATE_KINDS = {"TYPE", "EXTENSION", "SCHEMA", "FUNCTION", "PROCEDURE", "SEQUENCE", "DOMAIN", "ROLE"}
# Signs of PostgreSQL in a schema whose dialect is not named.
POSTGRES_MARKERS = re.compile(
    r"\b(BIG|SMALL)?SERIAL\b|\bJSONB\b|\bTIMESTAMPTZ\b|\bWITH(OUT)? TIME ZONE\b|::|\bgen_random_uuid\b"
    r"|\bCREATE\s+(EXTENSION|TYPE)\b|\bUSING\s+(GIN|GIST|BTREE|HASH|BRIN)\b",
    re.IGNORECASE,
)
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def sqlite_statements(sql: str, read: str) -> tuple[list[str], list[str]]:
    """SQLite versions of a schema's statements, and notes on the statements left out."""
    with SQLGLOT:
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
                f"CREATE INDEX {quote(name)} ON {quote(table)} ({', '.join(quote(c) for c in columns)})",
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


def quote(name: str) -> str:
    """An SQLite identifier, double-quoted unless it is a plain one."""
    return name if IDENTIFIER.match(name) else '"' + name.replace('"', '""') + '"'
