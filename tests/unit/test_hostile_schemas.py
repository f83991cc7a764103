"""A schema an agent wrote cannot hurt the worker that checks it: statements that act on the engine
or on files are refused, and the rest runs in a child process with limits."""

import os
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from pools.verifiers import scratch_sqlite
from pools.verifiers.schema import check_schema
from pools.verifiers.schema_screen import screen_schema

TABLE = "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT);\n"


def assert_this_process_can_write_sqlite():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO probe (body) VALUES (?)", [("x" * 1000,)] * 100)
    assert db.execute("SELECT count(*) FROM probe").fetchone() == (100,)
    assert db.execute("PRAGMA hard_heap_limit").fetchone() == (0,)


def test_heap_limit_pragma_is_refused_and_this_process_can_still_write_sqlite():
    report = check_schema("PRAGMA hard_heap_limit=1;\n" + TABLE, path="db/schema.sql")

    assert not report.applied and not report.accepted
    assert report.errors == ["line 1: PRAGMA is refused: it changes the SQLite engine, not the schema"]
    assert_this_process_can_write_sqlite()


def test_a_heap_limit_that_reaches_sqlite_stays_in_the_child(monkeypatch):
    # The child's own PRAGMA guard taken out, as if the screen had missed the statement.
    unguarded = scratch_sqlite.CHILD.replace(
        "sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA", "sqlite3.SQLITE_DETACH"
    )
    assert unguarded != scratch_sqlite.CHILD
    monkeypatch.setattr(scratch_sqlite, "CHILD", unguarded)

    result = scratch_sqlite.apply_in_scratch(["PRAGMA hard_heap_limit=1", TABLE])

    assert result.error == "out of memory" and result.stopped
    assert_this_process_can_write_sqlite()


def test_an_endless_recursive_query_is_interrupted(monkeypatch):
    monkeypatch.setattr(scratch_sqlite, "TIMEOUT_SEC", 1.0)

    report = check_schema(
        TABLE + "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;"
    )

    assert not report.applied and report.errors == ["SQLite: interrupted after 1s"]
    assert report.translated_from is None  # a stopped schema is not tried again translated


def test_a_huge_recursive_insert_is_stopped_by_the_memory_limit(monkeypatch):
    monkeypatch.setattr(scratch_sqlite, "MEMORY_BYTES", 96 * 2**20)

    report = check_schema(
        "CREATE TABLE big (b BLOB);\n"
        "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000000)\n"
        "SELECT randomblob(10000) FROM c;"
    )

    assert not report.applied and report.errors == ["SQLite: out of memory"]
    assert_this_process_can_write_sqlite()


@pytest.mark.parametrize(
    ("child", "error"),
    [
        ("while True:\n    pass\n", "stopped by its CPU time limit"),  # 1 s of statements: 2 CPU seconds
        ("import os\nos.abort()\n", "stopped by a crash (SIGABRT)"),
        ("print('not json')\n", "the scratch database failed: no report"),
        ("raise SystemExit('broken')\n", "the scratch database failed: broken"),
    ],
)
def test_a_child_that_spins_crashes_or_says_nothing_is_an_error_not_an_exception(monkeypatch, child, error):
    imports_and_limits = scratch_sqlite.CHILD.split("\n\n\n")[0]
    assert "resource.setrlimit" in imports_and_limits
    monkeypatch.setattr(scratch_sqlite, "CHILD", imports_and_limits + "\n" + child)

    result = scratch_sqlite.apply_in_scratch([TABLE], timeout_sec=1.0)

    assert (result.error, result.stopped) == (error, True)


def test_a_child_that_hangs_is_stopped_by_the_wall_clock(monkeypatch):
    monkeypatch.setattr(scratch_sqlite, "CHILD", "import time\ntime.sleep(60)\n")
    monkeypatch.setattr(scratch_sqlite, "START_GRACE_SEC", 0.5)

    result = scratch_sqlite.apply_in_scratch([TABLE], timeout_sec=0.5)

    assert (result.error, result.stopped) == ("stopped after 1s", True)


def test_schema_sql_cannot_attach_a_file(tmp_path):
    target = tmp_path / "stolen.db"

    report = check_schema(f"{TABLE}ATTACH DATABASE '{target}' AS x;", "sqlite")

    assert not report.applied and not target.exists()
    assert report.errors == ["line 2: ATTACH is refused: it opens or creates another database file"]


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("pragma Hard_Heap_Limit = 1;", "line 1: PRAGMA is refused"),
        ("EXPLAIN QUERY PLAN PRAGMA hard_heap_limit = 1;", "line 1: PRAGMA is refused"),
        ("PRAGMA foreign_keys = ON; PRAGMA writable_schema = 1;", "line 1: PRAGMA is refused"),
        ("/* a ; comment */ PRAGMA\nhard_heap_limit = 1;", "line 1: PRAGMA is refused"),
        (TABLE + "-- a comment;\nDETACH DATABASE x;", "line 3: DETACH is refused"),
        (TABLE + "VACUUM INTO '/tmp/copy.db';", "line 2: VACUUM is refused"),
        (TABLE + "SELECT load_extension('/tmp/evil.so');", "line 2: load_extension() is refused"),
        (TABLE + "SELECT \"LOAD_EXTENSION\"('/tmp/evil.so');", "line 2: load_extension() is refused"),
        (TABLE + "SELECT * FROM pragma_hard_heap_limit;", "line 2: pragma_hard_heap_limit is refused"),
        (TABLE + "SELECT * FROM \"pragma_table_info\"('t');", "line 2: pragma_table_info is refused"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY); ATTACH 'x.db' AS x;", "line 1: ATTACH is refused"),
    ],
)
def test_statements_that_act_on_the_engine_or_on_files_are_refused(sql, refused):
    report = check_schema(sql)

    assert not report.applied
    assert len(report.errors) == 1 and report.errors[0].startswith(refused)


@pytest.mark.parametrize(
    "sql",
    [
        "-- PRAGMA hard_heap_limit=1; ATTACH 'x' AS y;\n" + TABLE,
        "/* VACUUM INTO 'x'; */\n" + TABLE,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT DEFAULT 'x; PRAGMA hard_heap_limit=1; ATTACH');",
        'CREATE TABLE "pragma notes" (id INTEGER PRIMARY KEY, "attach" TEXT, vacuum_at TEXT);',
        "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT DEFAULT 'it''s; PRAGMA x');",
    ],
)
def test_comments_strings_and_names_do_not_make_a_refusal(sql):
    report = check_schema(sql)

    assert report.applied and report.errors == [], report.errors


def test_foreign_keys_pragma_is_left_out_with_a_note():
    report = check_schema("PRAGMA foreign_keys = ON;\n" + TABLE)

    assert report.applied and report.tables == ["t"]
    assert report.notes == ["skipped: PRAGMA foreign_keys = ON; (the scratch database enforces foreign keys)"]


def test_the_screen_keeps_the_rest_of_the_schema_intact():
    sql = "PRAGMA foreign_keys=ON;\nCREATE TABLE a (id INTEGER PRIMARY KEY);\nPRAGMA foreign_keys = 1;\n"

    assert screen_schema(sql).sql == "\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n\n"


def test_checks_in_a_row_reuse_one_child():
    first = scratch_sqlite.apply_in_scratch([TABLE])
    pid = scratch_sqlite.scratch_child_pid()
    second = scratch_sqlite.apply_in_scratch(["CREATE TABLE u (id INTEGER PRIMARY KEY);"])

    assert first.error is None and first.tables == ["t"]
    assert second.error is None and second.tables == ["u"]  # a new database for each check
    assert pid is not None and scratch_sqlite.scratch_child_pid() == pid


def test_a_check_after_the_child_was_killed_gets_a_new_child():
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    pid = scratch_sqlite.scratch_child_pid()
    os.kill(pid, signal.SIGKILL)

    result = scratch_sqlite.apply_in_scratch([TABLE])

    assert result.error is None and result.tables == ["t"]
    assert scratch_sqlite.scratch_child_pid() not in (None, pid)


def test_a_refused_pragma_leaves_the_reused_child_able_to_allocate():
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    pid = scratch_sqlite.scratch_child_pid()

    refused = scratch_sqlite.apply_in_scratch(["PRAGMA hard_heap_limit=1", TABLE])
    later = scratch_sqlite.apply_in_scratch([TABLE + "INSERT INTO t (note) SELECT randomblob(100000);"])

    assert refused.error == "not authorized" and not refused.stopped
    assert later.error is None and later.tables == ["t"]
    assert scratch_sqlite.scratch_child_pid() == pid


def test_a_heap_limit_that_reached_sqlite_does_not_outlive_its_check(monkeypatch):
    unguarded = scratch_sqlite.CHILD.replace(
        "sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA", "sqlite3.SQLITE_DETACH"
    )
    monkeypatch.setattr(scratch_sqlite, "CHILD", unguarded)
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    pid = scratch_sqlite.scratch_child_pid()

    poisoned = scratch_sqlite.apply_in_scratch(["PRAGMA hard_heap_limit=1", TABLE])
    assert scratch_sqlite.scratch_child_pid() is None  # stopped: that child is gone
    later = scratch_sqlite.apply_in_scratch([TABLE + "INSERT INTO t (note) SELECT randomblob(100000);"])

    assert poisoned.error == "out of memory" and poisoned.stopped
    assert later.error is None and later.tables == ["t"]
    assert scratch_sqlite.scratch_child_pid() not in (None, pid)


def test_a_patched_limit_starts_a_child_with_it(monkeypatch):
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    pid = scratch_sqlite.scratch_child_pid()
    monkeypatch.setattr(scratch_sqlite, "MEMORY_BYTES", 200 * 2**20)

    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    assert scratch_sqlite.scratch_child_pid() not in (None, pid)


def test_checks_from_four_threads_each_get_their_own_result():
    def check(n):
        results = []
        for i in range(5):
            name = f"t{n}_{i}"
            sql = (
                f"CREATE TABLE {name} (id INTEGER PRIMARY KEY);\n"
                f"CREATE TABLE {name}_c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES {name}(id));"
            )
            results.append((name, scratch_sqlite.apply_in_scratch([sql])))
        return results

    with ThreadPoolExecutor(4) as pool:
        outcomes = [r for results in pool.map(check, range(4)) for r in results]

    assert len(outcomes) == 20
    for name, result in outcomes:
        assert result.error is None
        assert result.tables == [name, f"{name}_c"]
        assert result.foreign_keys == {name: [], f"{name}_c": [["p"]]}


def test_a_forked_process_starts_its_own_child():
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
    parent_child = scratch_sqlite.scratch_child_pid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked process: report and leave at once, no pytest teardown
        try:
            result = scratch_sqlite.apply_in_scratch([TABLE])
            os.write(write_end, f"{result.tables} {scratch_sqlite.scratch_child_pid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as report:
        tables, forked_child = report.read().rsplit(" ", 1)

    assert tables == "['t']" and int(forked_child) != parent_child
    assert scratch_sqlite.scratch_child_pid() == parent_child  # the parent's child was left alone
    assert scratch_sqlite.apply_in_scratch([TABLE]).error is None
