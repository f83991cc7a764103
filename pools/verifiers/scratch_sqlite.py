"""A scratch SQLite database in a long-lived child process, for SQL an agent wrote.

Why a child: some SQLite settings hold for the whole process (`PRAGMA hard_heap_limit=1` leaves it
unable to allocate in any database, the app's own included), and a statement can loop or allocate
without end. So the SQL never runs in the worker: an interpreter of its own (`-I -S`: no
environment, no site-packages, no Django) limits its own address space, file writes (none) and core
dumps, and CPU seconds (a few per request, and `CPU_BUDGET_SEC` in all), then applies each request's
statements to a new in-memory database that may not attach files, run PRAGMAs or load extensions,
under a progress-handler deadline, and reports what it built as JSON.

Why it is reused: starting an interpreter costs tens of milliseconds of CPU and its own memory per
check. So each worker process keeps one child (started on first use, again after a fork) and sends
it one length-prefixed JSON request at a time (`_Child`), one thread at a time. A wall-clock
deadline stops it from outside. A child whose request hit a limit or the timeout, that crashed,
said something unreadable, changed code or limits (`_key`) or used up much of its CPU or memory
budget is killed and the next check starts a fresh one; a reused child that dies by a signal without
a reply (killed while idle, say) has the check run once more in a fresh one. A timeout, a crash or
a limit's kill comes back as an error, never as an exception.
"""

import atexit
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

TIMEOUT_SEC = 5.0
MEMORY_BYTES = 256 * 2**20
# On top of the statements' own deadline: the child interpreter's start on a busy machine (the first
# request to a fresh child), or its reply (any later request).
START_GRACE_SEC = 5.0
REPLY_GRACE_SEC = 2.0
# CPU seconds a child may use in all; a child near the end of them is replaced.
CPU_BUDGET_SEC = 600
REPLY_MAX_BYTES = 64 * 2**20
STDERR_TAIL_BYTES = 4096
KILLED_BY = {
    "SIGXCPU": "its CPU time limit",
    "SIGKILL": "a resource limit",
    "SIGXFSZ": "its file size limit (it tried to write a file)",
    "SIGSEGV": "a crash (SIGSEGV)",
    "SIGABRT": "a crash (SIGABRT)",
}

# The child: limits first (argv: CPU seconds for the first request, CPU seconds in all, address
# space bytes), then requests on stdin until it closes. A request or a reply is its length in bytes
# on a line, then that much JSON: {"statements": [...], "timeout": seconds} in, the report out.
CHILD = r"""
import json, math, resource, sqlite3, sys, time

cpu_sec, cpu_budget_sec, memory_bytes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# (soft, hard); past the soft CPU limit SIGXCPU ends the child, so the report can name it.
for kind, soft, hard in (
    (resource.RLIMIT_AS, memory_bytes, memory_bytes),
    (resource.RLIMIT_CPU, cpu_sec, cpu_budget_sec + 1),
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
    covered, foreign_keys, names = {}, {}, {}
    for table in tables:
        prefixes = []
        for _, name, _, _, partial in db.execute(f"PRAGMA index_list({quote(table)})"):
            columns = [row[2] for row in db.execute(f"PRAGMA index_info({quote(name)})")]
            if not partial and all(columns):  # an expression index has no column names
                prefixes.append(columns)
        columns = db.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        names[table] = [row[1] for row in columns]
        primary = sorted((row[5], row[1]) for row in columns if row[5])
        if primary:
            prefixes.append([column for _, column in primary])
        covered[table] = prefixes
        keys = {}
        for row in db.execute(f"PRAGMA foreign_key_list({quote(table)})"):
            keys.setdefault(row[0], []).append((row[1], row[3]))
        foreign_keys[table] = [[column for _, column in sorted(cols)] for _, cols in sorted(keys.items())]
    return {"tables": tables, "covered": covered, "foreign_keys": foreign_keys, "columns": names}


def apply(statements, timeout):
    result = {"error": None, "stopped": False}
    db = None
    try:
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
    finally:
        if db is not None:
            db.close()
    return result


def cpu_used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def resident():
    # Now, not ru_maxrss: that counts the worker's memory from before the exec.
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
while True:
    size = stdin.readline()
    if not size:
        break  # the worker closed the pipe, or exited
    request = json.loads(stdin.read(int(size)))
    timeout = float(request["timeout"])
    # This request's CPU seconds on top of those used so far, within the budget.
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = min(math.ceil(cpu_used() + timeout) + 1, cpu_budget_sec)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    try:
        result = apply(request["statements"], timeout)
    except MemoryError:
        result = {"error": "out of memory", "stopped": True}
    result["cpu"] = cpu_used()
    result["rss"] = resident()
    body = json.dumps(result).encode()
    stdout.write(b"%d\n" % len(body) + body)
    stdout.flush()
"""


@dataclass
class ScratchResult:
    """What applying statements to a scratch database showed."""

    error: str | None = None
    stopped: bool = False  # by a limit, the timeout or a crash: translating the SQL would not help
    tables: list[str] = field(default_factory=list)
    covered: dict[str, list[list[str]]] = field(default_factory=dict)  # table -> index column lists
    foreign_keys: dict[str, list[list[str]]] = field(default_factory=dict)  # table -> FK column lists
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> its columns, in order


class _Garbled(Exception):
    """The child's stdout is not a reply."""


class _Child:
    """One scratch child process and its pipes, owned by the process that started it."""

    def __init__(self, key: tuple, cpu_sec: int):
        self.key = key
        self.owner = os.getpid()
        self.fresh = True  # no request answered yet: its start counts against the first deadline
        self.cpu = 0.0  # CPU seconds it reported using so far
        self.rss = 0  # its resident memory in bytes after its last request, as it reported
        code, cpu_budget_sec, memory_bytes = key[1:]
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, str(cpu_sec), str(cpu_budget_sec), str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.fds = (self.proc.stdin.fileno(), self.proc.stdout.fileno(), self.proc.stderr.fileno())
        for fd in self.fds:
            os.set_blocking(fd, False)

    def pid(self) -> int:
        return self.proc.pid

    def usable(self, key: tuple, timeout_sec: float) -> bool:
        """The same code and limits, alive, and CPU and memory enough left for another request."""
        return (
            key == self.key
            and self.proc.poll() is None
            and self.cpu + math.ceil(timeout_sec) + 2 <= self.key[2]
            and self.rss <= self.key[3] // 2
        )

    def ask(self, statements: list[str], timeout_sec: float) -> tuple[ScratchResult, bool]:
        """Send one request and read its reply by the deadline: the result, and whether the child
        may serve another. A child that may not is already killed and reaped."""
        grace = START_GRACE_SEC if self.fresh else REPLY_GRACE_SEC
        deadline = time.monotonic() + timeout_sec + grace
        body = json.dumps({"statements": statements, "timeout": timeout_sec}).encode()
        outgoing = memoryview(b"%d\n" % len(body) + body)
        stdin_fd, stdout_fd, stderr_fd = self.fds
        reply, stderr_tail = bytearray(), bytearray()
        size, garbled = None, False
        with selectors.DefaultSelector() as selector:
            selector.register(stdin_fd, selectors.EVENT_WRITE)
            selector.register(stdout_fd, selectors.EVENT_READ)
            selector.register(stderr_fd, selectors.EVENT_READ)
            reading = {stdout_fd, stderr_fd}
            try:
                while stdout_fd in reading and (size is None or len(reply) < size):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.close()
                        return ScratchResult(f"stopped after {timeout_sec + grace:g}s", stopped=True), False
                    for key, _ in selector.select(remaining):
                        if key.fd == stdin_fd:
                            try:
                                outgoing = outgoing[os.write(stdin_fd, outgoing) :]
                            except BlockingIOError:
                                continue
                            except OSError:  # it is gone; its exit status tells why
                                outgoing = outgoing[:0]
                            if not outgoing:
                                selector.unregister(stdin_fd)
                            continue
                        try:
                            chunk = os.read(key.fd, 65536)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            selector.unregister(key.fd)
                            reading.discard(key.fd)
                        elif key.fd == stderr_fd:
                            stderr_tail = (stderr_tail + chunk)[-STDERR_TAIL_BYTES:]
                        else:
                            reply += chunk
                            if size is None:
                                reply, size = _split_size(reply)
                if size is not None and len(reply) >= size:
                    result, alive = self._report(bytes(reply[:size]))
                    if alive and len(reply) > size:  # more than one reply: out of step, not to be trusted
                        self.close()
                        alive = False
                    return result, alive
                # Its stdout closed before a whole reply: it exited or is exiting; what it said last.
                if outgoing:
                    selector.unregister(stdin_fd)
                while stderr_fd in reading and time.monotonic() < deadline:
                    if selector.select(max(0.0, deadline - time.monotonic())):
                        chunk = _read_some(stderr_fd)
                        stderr_tail = (stderr_tail + chunk)[-STDERR_TAIL_BYTES:]
                        if not chunk:
                            reading.discard(stderr_fd)
            except _Garbled:  # not a reply: whatever it is up to, it ends here
                garbled = True
        returncode = self._exit_status(time.monotonic() + 0.2 if garbled else deadline)
        if garbled:
            stderr_tail = (stderr_tail + _read_some(stderr_fd))[-STDERR_TAIL_BYTES:]
        self.close()
        if returncode is not None and returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return ScratchResult(f"stopped by {KILLED_BY.get(name, name)}", stopped=True), False
        if returncode is None and not garbled:
            return ScratchResult(f"stopped after {timeout_sec + grace:g}s", stopped=True), False
        return _failed(stderr_tail.decode("utf-8", "replace")), False

    def _report(self, body: bytes) -> tuple[ScratchResult, bool]:
        try:
            report = json.loads(body)
            result = ScratchResult(
                report["error"],
                report["stopped"],
                report.get("tables", []),
                report.get("covered", {}),
                report.get("foreign_keys", {}),
                report.get("columns", {}),
            )
            self.cpu, self.rss = float(report.get("cpu", 0.0)), int(report.get("rss", 0))
        except (ValueError, KeyError, TypeError) as exc:
            self.close()
            return _failed(f"unreadable reply ({exc})"), False
        self.fresh = False
        if result.stopped:  # a limit or the deadline hit it: its state is suspect
            self.close()
            return result, False
        return result, True

    def _exit_status(self, deadline: float) -> int | None:
        """Its exit status, once it ends by itself (soon after it closed stdout); None if it does not
        by the deadline."""
        try:
            return self.proc.wait(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Kill and reap it, and close the pipes."""
        if self.owner == os.getpid():
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.forget()

    def forget(self) -> None:
        """Close this process's ends of the pipes (in a forked process: the child stays its parent's)."""
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        if self.owner != os.getpid():
            self.proc.returncode = 0  # not ours to wait for


def _split_size(reply: bytearray) -> tuple[bytearray, int | None]:
    """The reply's length line taken off its start, once whole; garbled when it is not a length."""
    line, newline, rest = reply.partition(b"\n")
    if not newline:
        if len(line) > 20 or not line.isdigit():
            raise _Garbled
        return reply, None
    if not line.isdigit() or int(line) > REPLY_MAX_BYTES:
        raise _Garbled
    return rest, int(line)


def _read_some(fd: int) -> bytes:
    """What a non-blocking pipe holds now (up to its buffer's worth); b"" at its end or when empty."""
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, OSError):
        return b""


def _failed(stderr: str) -> ScratchResult:
    tail = stderr.strip().splitlines()[-1:] or ["no report"]
    return ScratchResult(f"the scratch database failed: {tail[0][:200]}", stopped=True)


_lock = threading.Lock()
_child: _Child | None = None


def _key() -> tuple:
    """What a child is started with; a running child with another key is replaced (tests patch these)."""
    return (sys.executable, CHILD, CPU_BUDGET_SEC, MEMORY_BYTES)


def _drop() -> None:
    global _child
    if _child is not None:
        _child.close()
        _child = None


def _after_fork_in_child() -> None:
    global _lock, _child
    _lock = threading.Lock()  # another thread may have held it at the fork
    if _child is not None:
        _child.forget()
        _child = None


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_drop)


def scratch_child_pid() -> int | None:
    """The pid of this process's scratch child, if one is running (for tests and diagnostics)."""
    child = _child
    if child is None or child.owner != os.getpid() or child.proc.poll() is not None:
        return None
    return child.pid()


def apply_in_scratch(statements: list[str], *, timeout_sec: float | None = None) -> ScratchResult:
    """Apply SQL statements in order to a fresh database in the scratch child process; the tables it
    built, their columns, their indexes' and primary keys' column lists and their foreign keys, or
    why it failed.
    The statements get `timeout_sec` (default `TIMEOUT_SEC`), the child a grace on top."""
    global _child
    timeout_sec = TIMEOUT_SEC if timeout_sec is None else timeout_sec
    with _lock:
        try:
            for _attempt in range(2):
                if _child is not None and _child.owner != os.getpid():
                    _child.forget()  # inherited through a fork: the parent's child, not ours
                    _child = None
                key = _key()
                if _child is not None and not _child.usable(key, timeout_sec):
                    _drop()
                if _child is None:
                    try:
                        _child = _Child(key, min(math.ceil(timeout_sec) + 1, CPU_BUDGET_SEC))
                    except OSError as exc:
                        return ScratchResult(f"the scratch database did not start: {exc}", stopped=True)
                child = _child
                reused = not child.fresh
                result, alive = child.ask(statements, timeout_sec)
                if not alive:
                    _child = None
                # A child that had served before and died on its own without a word (killed while
                # idle, say) is not the statements' doing: once more, in a fresh child.
                if reused and not alive and result.error and result.error.startswith("stopped by"):
                    continue
                return result
            return result
        except Exception as exc:  # never out of here: a broken child is an error, not an exception
            _drop()
            return ScratchResult(f"the scratch database failed: {exc!r}"[:230], stopped=True)
