"""The tables and columns that SQL written inside code refers to.

SQL is found in Python string literals, f-strings, `%`-formatted strings and `+` concatenations
(an interpolated part becomes a placeholder: a value, never a name we check), and in JavaScript
strings and template literals; a string is SQL when it starts with SELECT, INSERT, UPDATE,
DELETE or WITH and sqlglot parses it. Columns are resolved through table aliases and each
query's scope (CTEs and derived tables are not tables of the schema); an unqualified column of a
query over several tables must belong to one of them.
"""

import ast
import functools
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from ..verifiers.sqlglot_lock import SQLGLOT
from .js_scan import Token
from .sql_schema import bare

SQL_START = re.compile(r"^\s*(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|WITH)\b", re.IGNORECASE)
SQL_BODY = re.compile(r"\b(FROM|INTO|SET|VALUES|RETURNING)\b", re.IGNORECASE)
# Lower-case SQL counts only with some SQL punctuation: "select one from the list" is prose.
SQL_PUNCTUATION = re.compile(r"[*,=?()]|%s|:\w|\$\d")
PLACEHOLDER = "oc_param_"
PERCENT_FORMAT = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[sdifr]")
MAX_SQL_CHARS = 20_000


@dataclass(frozen=True)
class SqlRef:
    file: str
    line: int
    table: str
    column: str | None  # None: the table itself
    sql: str  # the statement, shortened, for the evidence


@dataclass(frozen=True)
class SqlString:
    file: str
    line: int
    text: str


def python_sql_strings(path: str, tree: ast.AST) -> list[SqlString]:
    """SQL-looking strings of a Python module, with interpolations as placeholders."""
    found: list[SqlString] = []
    seen: set[int] = set()
    for node in ast.walk(tree):
        if id(node) in seen:
            continue
        text = None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _is_text(node.left):
            text = PERCENT_FORMAT.sub(PLACEHOLDER, _flatten(node.left, seen)).replace("%%", "%")
            seen.add(id(node.left))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and _is_text(node):
            text = _flatten(node, seen)
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
        ):
            if _is_text(node.func.value):
                text = re.sub(r"\{[^{}]*\}", PLACEHOLDER, _flatten(node.func.value, seen))
                seen.add(id(node.func.value))
        elif isinstance(node, (ast.Constant, ast.JoinedStr)) and _is_text(node):
            text = _flatten(node, seen)
        if text and looks_like_sql(text):
            found.append(SqlString(path, node.lineno, text))
    return found


CREATES_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.\"`\[\]]+)", re.IGNORECASE)


def python_created_tables(tree: ast.AST) -> set[str]:
    """The tables a Python module's own SQL creates (`CREATE TABLE … schema_migrations`): the
    code's bookkeeping, not the project's schema."""
    return {
        bare(found.group(1))
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for found in CREATES_TABLE.finditer(node.value[:MAX_SQL_CHARS])
    }


def looks_like_sql(text: str) -> bool:
    start = SQL_START.match(text)
    if not start or len(text) > MAX_SQL_CHARS or not SQL_BODY.search(text):
        return False
    return start.group(1).isupper() or bool(SQL_PUNCTUATION.search(text.replace(PLACEHOLDER, "?")))


def _is_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_text(node.left) or _is_text(node.right)
    return False


def _flatten(node: ast.AST, seen: set[int]) -> str:
    """A string expression's text; whatever is not literal text becomes a placeholder."""
    seen.add(id(node))
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            seen.add(id(value))
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append(PLACEHOLDER)
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _flatten(node.left, seen) + _flatten(node.right, seen)
    return PLACEHOLDER


def js_sql_strings(path: str, tokens: list[Token]) -> list[SqlString]:
    found = []
    for token in tokens:
        if token.kind == "str":
            text = token.value
        elif token.kind == "tpl":
            text = "".join(s if kind == "text" else PLACEHOLDER for kind, s in token.parts)
        else:
            continue
        if looks_like_sql(text):
            found.append(SqlString(path, token.line, text))
    return found


def references(item: SqlString) -> list[SqlRef]:
    """The schema tables and columns one SQL string refers to (none when it does not parse)."""
    return [
        SqlRef(item.file, _line_of_name(item, name), table, column, _short(item.text))
        for table, column, name in _references(_prepare(item.text))
    ]


def _prepare(text: str) -> str:
    # A placeholder where a name belongs (`FROM {table}`) is a name sqlglot reads; elsewhere it
    # reads as a column, which _references skips. `?`, `:name` and `$1` parameters parse as they are.
    return text.strip().rstrip(";")


@functools.lru_cache(maxsize=4096)
def _references(text: str) -> tuple[tuple[str, str | None, str], ...]:
    statement = _parse(text)
    if statement is None:
        return ()
    refs: list[tuple[str, str | None, str]] = []
    ctes = {bare(cte.alias) for cte in statement.find_all(exp.CTE) if cte.alias}
    for table in statement.find_all(exp.Table):
        name = bare(table.name) if table.name else ""
        if name and name not in ctes and PLACEHOLDER not in name:
            refs.append((name, None, table.name))
    for select in _top_selects(statement):
        for scope in traverse_scope(select):
            refs += _scope_columns(scope, ctes)
    refs += _dml_columns(statement, ctes)
    return tuple(dict.fromkeys(refs))


def _parse(text: str) -> exp.Expression | None:
    for dialect in ("postgres", "sqlite", None):
        try:
            with SQLGLOT:
                statements = sqlglot.parse(text, read=dialect)
        except sqlglot.errors.SqlglotError:
            continue
        statements = [s for s in statements if s is not None]
        if len(statements) == 1:
            return statements[0]
        return None
    return None


def _top_selects(statement: exp.Expression) -> list[exp.Expression]:
    if isinstance(statement, exp.Query):
        return [statement]
    return [
        node
        for node in statement.find_all(exp.Query)
        if not isinstance(node.parent, exp.Query) and node.find_ancestor(exp.Query) is None
    ]


def _scope_columns(scope, ctes: set[str]) -> list[tuple[str, str | None, str]]:
    tables = {alias: source for alias, source in scope.sources.items() if isinstance(source, exp.Table)}
    derived = len(tables) != len(scope.sources)
    aliases = {
        select.alias.lower()
        for select in getattr(scope.expression, "expressions", [])
        if isinstance(select, exp.Alias)
    }
    refs = []
    for column in scope.columns:
        name = column.name
        if not name or PLACEHOLDER in name or name == "*":
            continue
        if column.find_ancestor(exp.Query) is not scope.expression:
            continue  # a subquery's column: its own scope reads it
        if any(PLACEHOLDER in source.name for source in tables.values()):
            continue
        if column.table:
            source = tables.get(column.table)
            if source is not None and bare(source.name) not in ctes:
                refs.append((bare(source.name), name.lower(), name))
        elif name.lower() in aliases or derived:
            continue
        elif len(tables) == 1:
            (source,) = tables.values()
            if bare(source.name) not in ctes:
                refs.append((bare(source.name), name.lower(), name))
        elif tables:
            # Over several tables: one of them must have it; checked as "any of" by the caller.
            refs.append(("|".join(sorted(bare(t.name) for t in tables.values())), name.lower(), name))
    return refs


def _dml_columns(statement: exp.Expression, ctes: set[str]) -> list[tuple[str, str | None, str]]:
    """Columns of INSERT column lists and of UPDATE/DELETE outside any subquery."""
    target = statement.this
    if isinstance(statement, exp.Insert):
        if isinstance(target, exp.Schema) and isinstance(target.this, exp.Table):
            table = bare(target.this.name)
            return [
                (table, ident.name.lower(), ident.name)
                for ident in target.expressions
                if ident.name and PLACEHOLDER not in ident.name
            ]
        return []
    if not isinstance(statement, (exp.Update, exp.Delete)) or not isinstance(target, exp.Table):
        return []
    table = bare(target.name)
    if table in ctes:
        return []
    names = {target.alias_or_name, target.name}
    refs = []
    for column in statement.find_all(exp.Column):
        if column.find_ancestor(exp.Query) is not None:
            continue
        name = column.name
        if not name or PLACEHOLDER in name or (column.table and column.table not in names):
            continue
        refs.append((table, name.lower(), name))
    return refs


def _line_of_name(item: SqlString, name: str) -> int:
    match = re.search(rf"\b{re.escape(name)}\b", item.text)
    return item.line + (item.text.count("\n", 0, match.start()) if match else 0)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 160 else flat[:157] + "…"
