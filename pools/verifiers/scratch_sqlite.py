"""A scratch SQLite database in a short-lived child process, for SQL an agent wrote.

Some SQLite settings hold for the whole process (`PRAGMA hard_heap_limit=1` leaves it unable to
allocate in any database, the app's own included), and a statement can loop or allocate without
end. So the SQL never runs in the worker: a fresh interpreter (`-I -S`: no environment, no
site-packages, no Django) limits its own address space, CPU seconds and file writes, applies the
statements to an in-memory database that may not attach files, and reports what it built as JSON.
A wall-clock timeout stops it from outside. A timeout, a crash or a limit's kill comes back as an
error, never as an exception.
"""

import json
import math
import signal
import subprocess
import sys
from dataclasses import dataclass, field

TIMEOUT_SEC = 5.0
MEMORY_BYTES = 256 * 2**20
# On top of the statements' own deadline: the child interpreter's start on a busy machine.
START_GRACE_SEC = 5.0
KILLED_BY = {
    "SIGXCPU": "its CPU time limit",
    "SIGKILL": "a resource limit",
    "SIGXFSZ": "its file size limit (it tried to write a file)",
    "SIGSEGV": "a crash (SIGSEGV)",
    "SIGABRT": "a crash (SIGABRT)",
}

# The child: limits first (argv: deadline in seconds, CPU seconds, address space bytes), then the
# statements from stdin (a JSON list), one JSON object on stdout.
CHILD = r"""
import json, resource, sqlite3, sys, time

timeout, cpu_sec, memory_bytes = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# (soft, hard); past the soft CPU limit SIGXCPU ends the child, so the report can name it.
for kind, soft, hard in (
    (resource.RLIMIT_AS, memory_bytes, memory_bytes),
    (resource.RLIMIT_CPU, cpu_sec, cpu_sec + 1),
    (resource.RLIMIT_FSIZE, 0, 0),
    (resource.RLIMIT_CORE, 0, 0),
):
    ceiling = resource.getrlimit(kind)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def authorize(action, arg1, arg2, *_):
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def describe(db):
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )]
    covered, foreign_keys = {}, {}
    for table in tables:
        prefixes = []
        for _, name, _, _, partial in db.execute(f"PRAGMA index_list({quote(table)})"):
            columns = [row[2] for row in db.execute(f"PRAGMA index_info({quote(name)})")]
            if not partial and all(columns):  # an expression index has no column names
                prefixes.append(columns)
        columns = db.execute(f"PRAGMA table_info({quote(table)})")
        primary = sorted((row[5], row[1]) for row in columns if row[5])
        if primary:
            prefixes.append([column for _, column in primary])
        covered[table] = prefixes
        keys = {}
        for row in db.execute(f"PRAGMA foreign_key_list({quote(table)})"):
            keys.setdefault(row[0], []).append((row[1], row[3]))
        foreign_keys[table] = [[column for _, column in sorted(cols)] for _, cols in sorted(keys.items())]
    return {"tables": tables, "covered": covered, "foreign_keys": foreign_keys}


result = {"error": None, "stopped": False}
try:
    statements = json.loads(sys.stdin.buffer.read())
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA temp_store = MEMORY")
    stop_at = time.monotonic() + timeout
    db.set_progress_handler(lambda: int(time.monotonic() > stop_at), 10_000)
    db.set_authorizer(authorize)
    try:
        for statement in statements:
            db.executescript(statement if statement.rstrip().endswith(";") else statement + ";")
    except sqlite3.Error as exc:
        message = str(exc)
        if "interrupted" in message:
            result.update(error=f"interrupted after {timeout:g}s", stopped=True)
        else:
            result.update(error=message, stopped="out of memory" in message)
    if result["error"] is None:
        db.set_authorizer(None)
        result.update(describe(db))
except MemoryError:
    result = {"error": "out of memory", "stopped": True}
except sqlite3.Error as exc:
    result = {"error": str(exc), "stopped": "interrupted" in str(exc) or "out of memory" in str(exc)}
sys.stdout.write(json.dumps(result))
"""


@dataclass
class ScratchResult:
    """What applying statements to a scratch database showed."""

    error: str | None = None
    stopped: bool = False  # by a limit, the timeout or a crash: translating the SQL would not help
    tables: list[str] = field(default_factory=list)
    covered: dict[str, list[list[str]]] = field(default_factory=dict)  # table -> index column lists
    foreign_keys: dict[str, list[list[str]]] = field(default_factory=dict)  # table -> FK column lists


def apply_in_scratch(statements: list[str], *, timeout_sec: float | None = None) -> ScratchResult:
    """Apply SQL statements in order to a fresh database in a child process; the tables it built,
    their indexes' and primary keys' column lists and their foreign keys, or why it failed.
    The statements get `timeout_sec` (default `TIMEOUT_SEC`), the child a grace on top."""
    timeout_sec = TIMEOUT_SEC if timeout_sec is None else timeout_sec
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        CHILD,
        str(timeout_sec),
        str(math.ceil(timeout_sec) + 1),
        str(MEMORY_BYTES),
    ]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(statements).encode(),
            capture_output=True,
            timeout=timeout_sec + START_GRACE_SEC,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ScratchResult(f"stopped after {timeout_sec + START_GRACE_SEC:g}s", stopped=True)
    except OSError as exc:
        return ScratchResult(f"the scratch database did not start: {exc}", stopped=True)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return ScratchResult(f"stopped by {KILLED_BY.get(name, name)}", stopped=True)
    try:
        report = json.loads(done.stdout)
        return ScratchResult(
            report["error"],
            report["stopped"],
            report.get("tables", []),
            report.get("covered", {}),
            report.get("foreign_keys", {}),
        )
    except (ValueError, KeyError, TypeError):
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no report"]
        return ScratchResult(f"the scratch database failed: {tail[0][:200]}", stopped=True)
