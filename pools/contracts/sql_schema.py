"""The tables and columns a project's `.sql` files create, read with sqlglot (PostgreSQL first,
then SQLite, then sqlglot's own dialect: the first that parses a file wins).

`CREATE TABLE` (columns from its definition; `CREATE TABLE … AS SELECT` and views accept any
column), `ALTER TABLE … ADD COLUMN`, `ALTER TABLE … RENAME TO`, `DROP TABLE`. Names compare
lower-cased, as unquoted SQL identifiers do.
"""

import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from ..verifiers.schema import is_migration
from ..verifiers.sqlglot_lock import SQLGLOT

DIALECTS = ("postgres", "sqlite", None)
ANY_COLUMN = "*"


@dataclass
class SchemaTable:
    name: str
    file: str
    line: int | None
    columns: dict[str, int | None] = field(default_factory=dict)  # column → line; "*" accepts any

    def has_column(self, column: str) -> bool:
        return ANY_COLUMN in self.columns or column.lower() in self.columns


@dataclass
class Schema:
    tables: dict[str, SchemaTable] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # files no dialect parses

    def table(self, name: str) -> SchemaTable | None:
        return self.tables.get(bare(name))

    @property
    def main_file(self) -> str | None:
        """The file that creates the most tables: where a missing one belongs."""
        counts: dict[str, int] = {}
        for table in self.tables.values():
            counts[table.file] = counts.get(table.file, 0) + 1
        return max(sorted(counts), key=counts.__getitem__) if counts else None


def bare(name: str) -> str:
    """A table name without its schema qualifier or quotes, lower-cased."""
    return name.strip().strip('"`[]').split(".")[-1].strip('"`[]').lower()


def parse_sql(text: str) -> list[exp.Expression] | None:
    for dialect in DIALECTS:
        try:
            with SQLGLOT:
                return [s for s in sqlglot.parse(text, read=dialect) if s is not None]
        except sqlglot.errors.SqlglotError:
            continue
    return None


def read_schema(files: dict[str, str]) -> Schema:
    """The schema the `.sql` files of a tree create, in path order, migrations after the rest."""
    schema = Schema()
    for path in sorted(files, key=lambda path: (is_migration(path), path)):
        if path.lower().endswith(".sql"):
            add_file(schema, path, files[path])
    return schema


def add_file(schema: Schema, path: str, text: str) -> None:
    statements = parse_sql(text)
    if statements is None:
        schema.errors.append(f"{path}: no SQL dialect parses it")
        return
    for statement in statements:
        if isinstance(statement, exp.Create):
            _create(schema, path, text, statement)
        elif isinstance(statement, exp.Alter):
            _alter(schema, path, text, statement)
        elif isinstance(statement, exp.Drop) and (statement.args.get("kind") or "").upper() == "TABLE":
            table = statement.find(exp.Table)
            if table is not None:
                schema.tables.pop(bare(table.name), None)


def _create(schema: Schema, path: str, text: str, statement: exp.Create) -> None:
    kind = (statement.args.get("kind") or "").upper()
    if kind not in ("TABLE", "VIEW"):
        return
    target = statement.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table) or not table.name:
        return
    name = bare(table.name)
    line = line_of(
        text,
        rf"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:\w+\s+)*(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"[\w.\"`\[\]]*?{re.escape(name)}\b",
    )
    entry = SchemaTable(name, path, line)
    if kind == "VIEW" or not isinstance(target, exp.Schema):
        entry.columns[ANY_COLUMN] = line  # a view or CREATE … AS SELECT: its columns are not listed
    else:
        for column in target.expressions:
            if isinstance(column, exp.ColumnDef) and column.name:
                entry.columns[column.name.lower()] = column_line(text, line, column.name)
    schema.tables[name] = entry


def _alter(schema: Schema, path: str, text: str, statement: exp.Alter) -> None:
    table = statement.this
    if not isinstance(table, exp.Table):
        return
    entry = schema.tables.get(bare(table.name))
    for action in statement.args.get("actions") or []:
        if isinstance(action, exp.ColumnDef) and entry is not None:
            entry.columns[action.name.lower()] = line_of(
                text, rf"\bADD\s+(?:COLUMN\s+)?{re.escape(action.name)}\b"
            )
        elif isinstance(action, exp.AlterRename) and entry is not None:
            renamed = action.this.name if isinstance(action.this, exp.Table) else str(action.this)
            schema.tables.pop(entry.name, None)
            entry.name = bare(renamed)
            schema.tables[entry.name] = entry


def line_of(text: str, pattern: str, start_line: int = 1) -> int | None:
    match = re.search(pattern, text, re.IGNORECASE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def column_line(text: str, table_line: int | None, column: str) -> int | None:
    """The line of a column's definition: its name at the start of a line after its table's."""
    lines = text.splitlines()
    start = (table_line or 1) - 1
    pattern = re.compile(rf"^\s*[\"`\[]?{re.escape(column)}[\"`\]]?\s", re.IGNORECASE)
    for index in range(start, len(lines)):
        if pattern.match(lines[index]):
            return index + 1
    return table_line
