"""SQLite with writing transactions queued on locks that are handed over at once.

SQLite lets one writer in at a time. A connection that finds the database locked waits in SQLite's
busy handler, which sleeps and retries on a fixed schedule (1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
50, 100 ms…), so a writer that lost a few races sleeps tens of milliseconds after the lock came
free. Writers here queue instead, before `BEGIN IMMEDIATE`: the threads of a process on a Python
lock, then one thread per process on an exclusive `flock` of `<database>.writer-lock`, which the
kernel hands to the next process the moment it is released (and releases when a process dies).
Both are released on commit, rollback and close. SQLite's busy handler is left to writers outside
the project (the sqlite3 shell).

The wait for both is bounded by OPENCLAW_SQLITE_WRITER_WAIT_SEC: a writer that hangs inside its
transaction makes the others fail with an OperationalError naming its pid (each holder writes its
pid into the lock file), instead of stopping every process for good.
"""

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import OperationalError
from django.db.backends.sqlite3 import base

logger = logging.getLogger("openclaw.db")
DEFAULT_WAIT_SEC = 30.0  # as long as SQLite's own busy timeout (settings.py)
_writer = threading.Lock()
_lock_files: dict[str, int] = {}  # database path → this process's descriptor of its writer-lock file


def _reset_after_fork() -> None:
    # A forked worker must not inherit its parent's lock state or share its open lock files (a
    # flock belongs to the open file, so a shared one would not keep the processes apart).
    global _writer
    _writer = threading.Lock()
    for fd in _lock_files.values():
        os.close(fd)
    _lock_files.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def _lock_file(database: str) -> int | None:
    """This process's descriptor of the database's writer-lock file; None for in-memory databases."""
    database = str(database)
    if database == ":memory:" or database.startswith("file:"):
        return None
    if database not in _lock_files:
        _lock_files[database] = os.open(
            f"{database}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
    return _lock_files[database]


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: "pid 123 (python manage.py rundramatiq …)"."""
    try:
        pid = int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return "an unknown process"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        command = ""
    return f"pid {pid} ({command[:120]})" if command else f"pid {pid}"


class _LockFileWaiter:
    """Waits for the lock file in a thread of its own: flock has no timeout, and nothing but a
    signal (which only the main thread may handle) interrupts a thread blocked in it. Waiting in
    flock keeps the kernel's hand-over in arrival order. A waiter given up on keeps the process's
    writer lock until its flock returns, then releases both, so no other thread of the process
    takes the lock file under it."""

    def __init__(self, fd: int, writer: threading.Lock):
        self.fd, self.writer = fd, writer
        self.granted = threading.Event()
        self.abandoned = False
        self.state = threading.Lock()
        threading.Thread(target=self.wait, name="sqlite-writer-lock", daemon=True).start()

    def wait(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # in the kernel, without the GIL
        with self.state:
            if not self.abandoned:
                self.granted.set()
                return
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.writer.release()

    def result(self, timeout: float) -> bool:
        """True once granted; False (and the waiter abandoned) after `timeout` seconds."""
        if self.granted.wait(max(timeout, 0)):
            return True
        with self.state:
            if self.granted.is_set():
                return True
            self.abandoned = True
            return False


def _lock_exclusive(fd: int, writer: threading.Lock, timeout: float) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return _LockFileWaiter(fd, writer).result(timeout)


class DatabaseWrapper(base.DatabaseWrapper):
    # What this connection holds while in a writing transaction: the lock it took (the process's
    # lock at the time; a fork replaces it) and the lock file's descriptor.
    _held_writer: "threading.Lock | None" = None
    _held_file: int | None = None

    def _start_transaction_under_autocommit(self):
        wait = float(getattr(settings, "OPENCLAW_SQLITE_WRITER_WAIT_SEC", DEFAULT_WAIT_SEC))
        deadline = time.monotonic() + wait
        writer = _writer
        if not writer.acquire(timeout=wait):
            fd = _lock_files.get(str(self.settings_dict["NAME"]))
            self._locked(fd, wait, "another thread of this process is writing or waiting")
        self._held_writer = writer
        try:
            fd = _lock_file(self.settings_dict["NAME"])
            if fd is not None:
                if not _lock_exclusive(fd, writer, deadline - time.monotonic()):
                    self._held_writer = None  # the abandoned waiter releases it
                    self._locked(fd, wait, "the writer lock file stayed locked")
                self._held_file = fd
                os.pwrite(fd, f"{os.getpid()}\n".encode().ljust(16), 0)
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _locked(self, fd: int | None, wait: float, why: str):
        holder = _holder(fd) if fd is not None else "another thread"
        message = (
            f"database is locked: no writing transaction within {wait:g} s "
            f"(OPENCLAW_SQLITE_WRITER_WAIT_SEC); {why}, last taken by {holder}"
        )
        logger.error("%s [%s]", message, self.settings_dict["NAME"])
        raise OperationalError(message)

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writer()

    def _release_writer(self) -> None:
        if self._held_file is not None:
            fd, self._held_file = self._held_file, None
            fcntl.flock(fd, fcntl.LOCK_UN)
        if self._held_writer is not None:
            writer, self._held_writer = self._held_writer, None
            writer.release()
