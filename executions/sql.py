"""The hand-built SQL of the hot path: compare-and-set UPDATEs, batched UPDATE … RETURNING, the
row lock of executions and the admission read, each statement's text built once per shape.

This is the only module that writes SQL by hand; everything else uses the ORM. The statements
here run inside the write lock on every link of a task chain (success, dispatch, start), where
building and compiling them through the ORM costs several times the statement itself (measured in
BENCHMARKS.md, "queries"). The text is cached per shape (model, columns assigned, columns added
to, filter columns and IN-list sizes); values are adapted by their fields as `QuerySet.update()`
and `filter()` do, so what is stored is the same.

The hot path's reads stay ORM querysets: `CompiledRead` has the ORM compile each once per process
and runs its SQL with new values, reading the rows as the queryset would.
"""

from collections.abc import Iterable
from datetime import datetime
from decimal import Context, Decimal
from functools import lru_cache
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Model
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    ValuesIterable,
    ValuesListIterable,
    get_related_populators,
)

from .models import Event, Execution, Task
from .states import ExecutionStatus, TaskStatus


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
    guard: str = "",
) -> tuple[str, list]:
    """`update()`'s SQL and parameters, for a caller that runs it inside a larger statement (`guard`:
    one more condition, in SQL without parameters)."""
    assign, add = assign or {}, add or {}
    shape = tuple(
        (name, len(value) if isinstance(value, (list, tuple)) else None) for name, value in where.items()
    )
    sql = _statement(model, connection.vendor, tuple(assign), tuple(add), shape, returning, guard)
    params = [_field(model, name).get_db_prep_save(value, connection) for name, value in assign.items()]
    params += [_field(model, name).get_db_prep_save(value, connection) for name, value in add.items()]
    for name, value in where.items():
        field = _field(model, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        params += [field.get_db_prep_value(v, connection, prepared=False) for v in values]
    return sql, params


def update_then_insert(update: str, insert: str) -> str:
    """PostgreSQL: an UPDATE and an INSERT in one statement (a data-modifying CTE), one round trip."""
    return f"WITH updated AS ({update}) {insert}"


@lru_cache(maxsize=64)
def insert_statement(model: type[Model], names: tuple[str, ...], rows: int = 1) -> str:
    """INSERT of `rows` rows of the model's fields `names` (parameters: `insert_params()`)."""
    quote = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(names))})"
    columns = ", ".join(quote(_field(model, name).column) for name in names)
    return f"INSERT INTO {table(model)} ({columns}) VALUES {', '.join([row] * rows)}"


# The condition of the statements `insert_new_then()` runs only when its INSERT inserted.
INSERTED = "EXISTS (SELECT 1 FROM inserted)"


def insert_new_then(
    model: type[Model],
    names: tuple[str, ...],
    unique: tuple[str, ...],
    row: Model,
    statements: dict,
    read: tuple,
) -> list[tuple]:
    """PostgreSQL, one round trip: `row` inserted unless a row with the same `unique` fields exists
    and, in the same statement, `statements` (name → SQL and parameters, the updates built with
    `guard=INSERTED` so that they change nothing when the row existed) as data-modifying CTEs.
    Returns the RETURNING rows of the statements named in `read`, joined: none when the row existed."""
    insert = insert_new_statement(model, names, unique)
    ctes = ", ".join(f"{name} AS ({sql})" for name, (sql, _) in statements.items())
    params = insert_params([row], names) + [p for _, values in statements.values() for p in values]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH inserted AS ({insert} RETURNING 1), {ctes} SELECT * FROM {' CROSS JOIN '.join(read)}",
            params,
        )
        return cursor.fetchall()


@lru_cache(maxsize=16)
def insert_new_statement(model: type[Model], names: tuple[str, ...], unique: tuple[str, ...]) -> str:
    """INSERT of one row unless a row with the same `unique` fields exists (rowcount 0 then), in one
    statement: no read of the key first, and no savepoint for a duplicate (SQLite ≥ 3.24,
    PostgreSQL)."""
    columns = ", ".join(connection.ops.quote_name(_field(model, name).column) for name in unique)
    return f"{insert_statement(model, names)} ON CONFLICT ({columns}) DO NOTHING"


def insert_params(objects: list[Model], names: tuple[str, ...]) -> list:
    """The values of unsaved `objects`' fields `names`, adapted as `bulk_create()` adapts them."""
    if not objects:
        return []
    fields = [_field(type(objects[0]), name) for name in names]
    return [
        field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objects for field in fields
    ]


def decimal_value(model: type[Model], name: str, value) -> Decimal | None:
    """A raw value of the model's DecimalField `name` as the ORM reads it: SQLite hands back a float
    (or an int), rounded here to the field's places as Django's own converter does."""
    if value is None or isinstance(value, Decimal):
        return value
    places = Decimal(1).scaleb(-_field(model, name).decimal_places)
    if isinstance(value, float):
        return Context(prec=15).create_decimal_from_float(value).quantize(places)
    return Decimal(value).quantize(places)


def table(model: type[Model]) -> str:
    """The model's table name, quoted for this connection's SQL."""
    return connection.ops.quote_name(model._meta.db_table)


def _field(model: type[Model], name: str):
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


@lru_cache(maxsize=256)
def _statement(
    model: type[Model],
    vendor: str,
    assign: tuple,
    add: tuple,
    where: tuple,
    returning: tuple,
    guard: str = "",
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
    ] + ([guard] if guard else [])
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


def lock_rows_of_executions(execution_ids: Iterable[str]) -> None:
    """SELECT … FOR UPDATE of the executions' rows, in id order (the global order that keeps two
    dispatchers taking them from deadlocking); nothing on databases without row locks."""
    execution_ids = sorted(set(execution_ids))
    if not connection.features.has_select_for_update or not execution_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "id" FROM {table(Execution)} WHERE "id" IN'
            f' ({", ".join(["%s"] * len(execution_ids))}) ORDER BY "id" FOR UPDATE',
            execution_ids,
        )
        cursor.fetchall()


# Among a pool's ready tasks (t) of executing executions (e). "rank" is the index
# task_dispatch_order's: ties go to the task planned first (the lower id). "fifo" is for benchmarks
# only: see OPENCLAW_DISPATCH_ORDER.
DISPATCH_ORDER = {
    "rank": 't."priority", t."rank" DESC, t."id"',
    "fifo": 't."ready_at", t."id"',
}


# The admission read runs on every dispatch, inside the pool's lock (and on SQLite the write lock).
def admission(pool_name: str, now: datetime, *, limit: int) -> tuple[int, list[tuple[int, str, str, bool]]]:
    """The pool's queued and running tasks across executions, and its first ready tasks in dispatch
    order whose backoff is over, of executions still executing: (id, execution id, key, whether the
    execution has a budget). With no ready task the count is not needed: 0."""
    not_before = Task._meta.get_field("not_before").get_db_prep_value(now, connection)
    tasks = table(Task)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT t."id", t."execution_id", t."key", e."budget_usd" IS NOT NULL,'
            f' (SELECT COUNT(*) FROM {tasks} a WHERE a."pool" = %s AND a."status" IN (%s, %s))'
            f' FROM {tasks} t INNER JOIN {table(Execution)} e ON t."execution_id" = e."id"'
            f' WHERE t."pool" = %s AND t."status" = %s AND e."status" = %s'
            f' AND (t."not_before" IS NULL OR t."not_before" <= %s)'
            f" ORDER BY {DISPATCH_ORDER[settings.OPENCLAW_DISPATCH_ORDER]} LIMIT %s",
            [
                pool_name,
                TaskStatus.QUEUED,
                TaskStatus.RUNNING,
                pool_name,
                TaskStatus.READY,
                ExecutionStatus.EXECUTING,
                not_before,
                limit,
            ],
        )
        rows = cursor.fetchall()
    active = rows[0][4] if rows else 0
    return active, [
        (task_id, execution_id, key, bool(budget)) for task_id, execution_id, key, budget, _ in rows
    ]


# The event outbox: an execution's next seqs reserved, and on PostgreSQL the rows inserted with them
# in the same statement (`events.emit_many`).


def _event_columns(*names: str) -> str:
    return ", ".join(connection.ops.quote_name(Event._meta.get_field(name).column) for name in names)


def reserve_seqs() -> str:
    """Advance an execution's next_seq (params: by how much, execution id), returning the new value."""
    return f'UPDATE {table(Execution)} SET "next_seq" = "next_seq" + %s WHERE "id" = %s RETURNING "next_seq"'


@lru_cache(maxsize=64)
def reserve_seqs_and_insert_events(rows: int, others: tuple[str, ...]) -> str:
    """PostgreSQL: the execution's next_seq advanced by `rows`, and the rows inserted with the seqs
    reserved, in order (params: rows, execution id, rows, then each row's values without its seq)."""
    values = ", ".join(f"({', '.join(['%s'] * len(others))}, {n})" for n in range(1, rows + 1))
    columns = ", ".join(f"c{i}" for i in range(len(others)))
    return (
        f"WITH reserved AS ({reserve_seqs()}) "
        f"INSERT INTO {table(Event)} ({_event_columns(*others, 'seq')}) "
        f'SELECT {", ".join(f"v.c{i}" for i in range(len(others)))}, reserved."next_seq" - %s + v.n '
        f"FROM reserved, (VALUES {values}) AS v({columns}, n) "
        f"RETURNING {_event_columns('seq')}"
    )


# ---------------------------------------------------------------- reads compiled once


class CompiledRead:
    """A read of the hot path that the ORM compiles once per process (and database), then runs with
    new values. It gives what the queryset gives (instances with their select_related objects,
    annotations and deferred fields; or its values, values_list, flat values_list rows), without
    building and compiling the query again: most of a small read's cost (BENCHMARKS.md, "queries").

    `build(*values)` returns the queryset for these values; `fields` are the model fields the values
    are compared with, which adapt them. Each value must be a parameter of the SQL: a list value
    stands for an IN list, compiled once per length. The query is compiled with placeholder values
    and their places found in its parameters; constants the queryset holds stay as compiled."""

    declared: "list[CompiledRead]" = []  # every read of the process, for `compile_reads`

    def __init__(self, build, *fields):
        self.build, self.fields = build, fields
        self._compiled: dict[tuple, tuple] = {}
        CompiledRead.declared.append(self)

    def first(self, *values):
        """The first result for these values, or None (the query is not limited to one row)."""
        found = self.all(*values)
        return found[0] if found else None

    def all(self, *values) -> list:
        values = tuple(list(v) if isinstance(v, (list, tuple, set, frozenset)) else v for v in values)
        sizes = tuple(len(v) if isinstance(v, list) else None for v in values)
        if 0 in sizes:  # an empty IN list: the ORM knows what the query becomes
            return list(self.build(*values))
        shape = _shape(sizes)
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = self._compile(sizes)
        sql, params, places, read = compiled
        params = list(params)
        for position, (index, item) in places.items():
            value = values[index] if item is None else values[index][item]
            params[position] = self.fields[index].get_db_prep_value(value, connection, prepared=False)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return read(cursor.fetchall())

    def _compile(self, sizes: tuple) -> tuple:
        placeholders, wanted = [], {}
        for index, (field, size) in enumerate(zip(self.fields, sizes, strict=True)):
            items = [_placeholder(field, index * 1000 + n) for n in range(size if size is not None else 1)]
            placeholders.append(items if size is not None else items[0])
            for n, item in enumerate(items):
                wanted[field.get_db_prep_value(item, connection, prepared=False)] = (
                    index,
                    n if size is not None else None,
                )
        queryset = self.build(*placeholders)
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        places = {i: wanted[p] for i, p in enumerate(params) if _hashable(p) and p in wanted}
        if set(places.values()) != set(wanted.values()):
            raise ValueError(f"{queryset.model.__name__}: a value is not a parameter of its compiled SQL")
        return sql, params, places, _reader(queryset, compiler)


def _shape(sizes: tuple) -> tuple:
    """A compiled read's key: this thread's database, and each value's IN-list length (None: one value)."""
    return (connection.alias, connection.vendor) + sizes


def compile_reads() -> int:
    """Compile every declared read now, for single values, and return how many were compiled. A
    worker does it as it boots: left to the first use, a fresh worker's first tasks each paid for
    the reads on their path (about 12 ms on a task's start) while their siblings had started."""
    compiled = 0
    for read in CompiledRead.declared:
        sizes = (None,) * len(read.fields)
        if _shape(sizes) in read._compiled:
            continue
        try:
            read._compiled[_shape(sizes)] = read._compile(sizes)
        except Exception:  # a read of lists compiles per length on first use
            continue
        compiled += 1
    return compiled


def _placeholder(field, n: int):
    """A value of the field's type no query holds as a constant."""
    if field.get_internal_type() == "UUIDField":
        return UUID(int=0x5E17_0000_0000 + n)
    if field.get_internal_type() in ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField"):
        return -(7_000_000_000 + n)
    return f"\x01compiled-read-{n}"


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _reader(queryset, compiler):
    """The rows → results step of the queryset's iterable (Django's ModelIterable, ValuesIterable,
    ValuesListIterable, FlatValuesListIterable), set up once from its compiled query."""
    query, db = queryset.query, compiler.using
    count = compiler.col_count
    converters = compiler.get_converters([column[0] for column in compiler.select[:count]])

    def converted(rows: list[tuple]):
        for row in rows:
            row = list(row)
            for position, (functions, expression) in converters.items():
                value = row[position]
                for convert in functions:
                    value = convert(value, expression, connection)
                row[position] = value
            yield row

    kind = queryset._iterable_class
    if kind is FlatValuesListIterable:
        return lambda rows: [row[0] for row in converted(rows)]
    if kind is ValuesListIterable:
        return lambda rows: [tuple(row[:count]) for row in converted(rows)]
    if kind is ValuesIterable:
        names = list(query.selected or [*query.extra_select, *query.values_select, *query.annotation_select])
        return lambda rows: [dict(zip(names, row, strict=False)) for row in converted(rows)]
    if kind is not ModelIterable:
        raise ValueError(f"{queryset.model.__name__}: a compiled read gives instances or values, not {kind}")
    klass_info, annotations = compiler.klass_info, compiler.annotation_col_map or {}
    model = klass_info["model"]
    start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
    init_list = [column[0].target.attname for column in compiler.select[start:end]]
    populators = get_related_populators(klass_info, compiler.select, db)

    def instances(rows: list[tuple]) -> list:
        found = []
        for row in converted(rows):
            obj = model.from_db(db, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in annotations.items():
                setattr(obj, name, row[position])
            found.append(obj)
        return found

    return instances
