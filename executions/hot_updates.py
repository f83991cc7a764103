"""The compare-and-set UPDATEs of the hot path, in SQL built once per statement shape.

Building and compiling an UPDATE through the ORM costs 0.15–0.3 ms of CPU, three to five times
the whole statement as SQL, and a chain link (success, dispatch, start) runs about six of them,
most inside the write lock (BENCHMARKS.md). Here the statement text is cached per shape (model,
columns assigned, columns added to, filter columns and IN-list sizes); the values are adapted by
their fields as `QuerySet.update()` and `filter()` do, so what is stored is the same.
"""

from functools import lru_cache

from django.db import connection
from django.db.models import Model


def update(model: type[Model], where: dict, *, assign: dict | None = None, add: dict | None = None) -> int:
    """UPDATE model's rows matching `where` (field → value, or a list or tuple for IN), setting the
    `assign` fields and adding to the `add` fields; returns the number of rows changed. Like
    `QuerySet.update()`, it leaves auto_now fields and signals alone."""
    sql, params = update_statement(model, where, assign=assign, add=add)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def update_returning(
    model: type[Model],
    where: dict,
    returning: tuple[str, ...],
    *,
    assign: dict | None = None,
    add: dict | None = None,
) -> list[tuple]:
    """`update()` of several rows at once, returning the `returning` fields' (raw) values of the rows
    it changed: one statement where a compare-and-set per row would take one each (RETURNING:
    SQLite ≥ 3.35, PostgreSQL)."""
    sql, params = update_statement(model, where, assign=assign, add=add, returning=returning)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def update_statement(
    model: type[Model],
    where: dict,
    *,
    assign: dict | None = None,
    add: dict | None = None,
    returning: tuple[str, ...] = (),
) -> tuple[str, list]:
    """`update()`'s SQL and parameters, for a caller that runs it inside a larger statement."""
    assign, add = assign or {}, add or {}
    shape = tuple(
        (name, len(value) if isinstance(value, (list, tuple)) else None) for name, value in where.items()
    )
    sql = _statement(model, connection.vendor, tuple(assign), tuple(add), shape, returning)
    params = [_field(model, name).get_db_prep_save(value, connection) for name, value in assign.items()]
    params += [_field(model, name).get_db_prep_save(value, connection) for name, value in add.items()]
    for name, value in where.items():
        field = _field(model, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        params += [field.get_db_prep_value(v, connection, prepared=False) for v in values]
    return sql, params


@lru_cache(maxsize=64)
def insert_statement(model: type[Model], names: tuple[str, ...], rows: int = 1) -> str:
    """INSERT of `rows` rows of the model's fields `names` (parameters: `insert_params()`)."""
    quote = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(names))})"
    columns = ", ".join(quote(_field(model, name).column) for name in names)
    return f"INSERT INTO {table(model)} ({columns}) VALUES {', '.join([row] * rows)}"


def insert_params(objects: list[Model], names: tuple[str, ...]) -> list:
    """The values of unsaved `objects`' fields `names`, adapted as `bulk_create()` adapts them."""
    if not objects:
        return []
    fields = [_field(type(objects[0]), name) for name in names]
    return [
        field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objects for field in fields
    ]


def table(model: type[Model]) -> str:
    """The model's table name, quoted for this connection's SQL."""
    return connection.ops.quote_name(model._meta.db_table)


def _field(model: type[Model], name: str):
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


@lru_cache(maxsize=256)
def _statement(
    model: type[Model], vendor: str, assign: tuple, add: tuple, where: tuple, returning: tuple
) -> str:
    quote = connection.ops.quote_name
    columns = [f"{quote(_field(model, name).column)} = %s" for name in assign]
    columns += [
        f"{quote(column)} = {quote(column)} + %s" for column in (_field(model, name).column for name in add)
    ]
    conditions = [
        f"{quote(_field(model, name).column)} = %s"
        if size is None
        else f"{quote(_field(model, name).column)} IN ({', '.join(['%s'] * size)})"
        for name, size in where
    ]
    if not columns or not conditions or any(size == 0 for _, size in where):
        raise ValueError(
            "an update sets or adds at least one field, under a condition, with no empty IN list"
        )
    returned = (
        f" RETURNING {', '.join(quote(_field(model, name).column) for name in returning)}"
        if returning
        else ""
    )
    return f"UPDATE {table(model)} SET {', '.join(columns)} WHERE {' AND '.join(conditions)}{returned}"
