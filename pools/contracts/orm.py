"""The tables and columns that ORM models in Python code map to.

- SQLAlchemy declarative: a class with `__tablename__`; its columns are attributes assigned
  `Column(…)` or `mapped_column(…)` (an explicit name as the first string argument wins) and
  annotations `Mapped[…]` (a `relationship` is not a column); columns of mixins and abstract
  bases defined in the tree are inherited. `Table("name", metadata, Column("a", …), …)` too.
- Django: a subclass of `models.Model` (or of another model of the tree) that is not abstract;
  its table is `Meta.db_table`, else `<app>_<model>` (the app: the folder of `models.py`); its
  columns are its fields (`<name>_id` for a ForeignKey or OneToOneField, `db_column` wins), plus
  `id` unless a field is the primary key. A ManyToManyField is a table of its own, not a column.
"""

import ast
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SQLALCHEMY_COLUMNS = {"Column", "mapped_column"}
SQLALCHEMY_NOT_COLUMNS = {"relationship", "column_property", "synonym", "association_proxy", "deferred"}
DJANGO_RELATIONS = {"ForeignKey", "OneToOneField"}


@dataclass
class OrmTable:
    name: str
    file: str
    line: int
    kind: str  # "sqlalchemy" or "django"
    model: str
    columns: dict[str, int] = field(default_factory=dict)  # column → line


def orm_tables(path: str, tree: ast.AST, classes: dict[str, ast.ClassDef] | None = None) -> list[OrmTable]:
    """The ORM tables of one module; `classes` are the tree's classes by name, for inherited columns."""
    classes = classes if classes is not None else class_index({path: tree})
    tables = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            table = _sqlalchemy_model(path, node, classes) or _django_model(path, node, classes)
            if table is not None:
                tables.append(table)
        elif isinstance(node, ast.Call) and _callee(node) == "Table" and _first_string(node):
            table = OrmTable(_first_string(node), path, node.lineno, "sqlalchemy", _first_string(node))
            for arg in node.args[1:]:
                if isinstance(arg, ast.Call) and _callee(arg) == "Column" and _first_string(arg):
                    table.columns[_first_string(arg).lower()] = arg.lineno
            tables.append(table)
    return tables


def class_index(trees: dict[str, ast.AST]) -> dict[str, ast.ClassDef]:
    return {
        node.name: node
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _first_string(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _class_attr(node: ast.ClassDef, name: str) -> ast.expr | None:
    for statement in node.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in statement.targets
        ):
            return statement.value
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == name
            and statement.value is not None
        ):
            return statement.value
    return None


def _lineage(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> list[ast.ClassDef]:
    """The class and its bases defined in the tree, nearest first (each once)."""
    order, stack, seen = [], [node], set()
    while stack:
        current = stack.pop(0)
        if current.name in seen:
            continue
        seen.add(current.name)
        order.append(current)
        stack += [classes[name] for name in _base_names(current) if name in classes]
    return order


# ---------------------------------------------------------------- SQLAlchemy


def _sqlalchemy_model(path: str, node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> OrmTable | None:
    tablename = _class_attr(node, "__tablename__")
    if not (isinstance(tablename, ast.Constant) and isinstance(tablename.value, str)):
        return None
    table = OrmTable(tablename.value, path, node.lineno, "sqlalchemy", node.name)
    for current in reversed(_lineage(node, classes)):
        for statement in current.body:
            for name, line in _sqlalchemy_columns(statement):
                table.columns[name.lower()] = line
    return table


def _sqlalchemy_columns(statement: ast.stmt) -> list[tuple[str, int]]:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target, value = statement.targets[0], statement.value
        annotated = False
    elif isinstance(statement, ast.AnnAssign):
        target, value = statement.target, statement.value
        annotated = _is_mapped(statement.annotation)
    else:
        return []
    if not isinstance(target, ast.Name) or target.id.startswith("__"):
        return []
    if isinstance(value, ast.Call):
        callee = _callee(value)
        if callee in SQLALCHEMY_COLUMNS:
            return [(_first_string(value) or target.id, statement.lineno)]
        if callee in SQLALCHEMY_NOT_COLUMNS:
            return []
    if annotated and value is None and not _is_relationship_annotation(statement.annotation):
        return [(target.id, statement.lineno)]
    return []


def _is_mapped(annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    return (isinstance(annotation, ast.Name) and annotation.id == "Mapped") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Mapped"
    )


def _is_relationship_annotation(annotation: ast.expr) -> bool:
    """`Mapped[list["Booking"]]` or `Mapped["User"]`: a relationship, not a column."""
    if not isinstance(annotation, ast.Subscript):
        return False
    inner = annotation.slice
    if isinstance(inner, ast.Subscript) and isinstance(inner.value, ast.Name):
        return inner.value.id in ("list", "List", "set", "Set")
    if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
        return inner.value[:1].isupper()
    if isinstance(inner, ast.Name):
        return inner.id[:1].isupper() and inner.id not in ("Optional", "Decimal", "Any")
    return False


# ---------------------------------------------------------------- Django


def _is_django_model(node: ast.ClassDef, classes: dict[str, ast.ClassDef], depth: int = 0) -> bool:
    for base in node.bases:
        if isinstance(base, ast.Attribute) and base.attr == "Model" and _name(base.value) == "models":
            return True
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        if (
            name in classes
            and classes[name] is not node
            and depth < 10
            and _is_django_model(classes[name], classes, depth + 1)
        ):
            return True
    return False


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _meta(node: ast.ClassDef, option: str) -> ast.expr | None:
    for statement in node.body:
        if isinstance(statement, ast.ClassDef) and statement.name == "Meta":
            return _class_attr(statement, option)
    return None


def _django_model(path: str, node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> OrmTable | None:
    if not _is_django_model(node, classes):
        return None
    abstract = _meta(node, "abstract")
    if isinstance(abstract, ast.Constant) and abstract.value is True:
        return None
    db_table = _meta(node, "db_table")
    if isinstance(db_table, ast.Constant) and isinstance(db_table.value, str):
        name = db_table.value
    else:
        name = f"{django_app_label(path)}_{node.name.lower()}"
    table = OrmTable(name, path, node.lineno, "django", node.name)
    has_pk = False
    for current in reversed(_lineage(node, classes)):
        for statement in current.body:
            if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
                continue
            target, value = statement.targets[0], statement.value
            if not (isinstance(target, ast.Name) and isinstance(value, ast.Call)):
                continue
            field_type = _callee(value)
            if not (field_type.endswith("Field") or field_type in DJANGO_RELATIONS):
                continue
            if field_type == "ManyToManyField":
                continue
            keywords = {k.arg: k.value for k in value.keywords if k.arg}
            column = target.id + ("_id" if field_type in DJANGO_RELATIONS else "")
            db_column = keywords.get("db_column")
            if isinstance(db_column, ast.Constant) and isinstance(db_column.value, str):
                column = db_column.value
            primary = keywords.get("primary_key")
            if isinstance(primary, ast.Constant) and primary.value is True:
                has_pk = True
            table.columns[column.lower()] = statement.lineno
    if not has_pk:
        table.columns.setdefault("id", node.lineno)
    return table


def django_app_label(path: str) -> str:
    """The app of a models module: the folder holding `models.py` (or the `models/` package)."""
    parts = PurePosixPath(path).parts
    folders = parts[:-1]
    if folders and folders[-1] == "models":
        folders = folders[:-1]
    return folders[-1].lower() if folders else "app"
