"""SQLite with writing transactions queued on locks that are handed over at once.

SQLite lets one writer in at a time. A connection that finds the database locked waits in SQLite's
busy handler, which sleeps and retries on a fixed schedule (1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
50, 100 ms…), so a writer that lost a few races sleeps tens of milliseconds after the lock came
free. Writers here queue instead, before `BEGIN IMMEDIATE`: the threads of a process on a Python
lock, then one thread per process on an exclusive `flock` of `<database>.writer-lock`, which the
kernel hands to the next process the moment it is released (and releases when a process dies).
Both are released on commit, rollback and close. SQLite's busy handler is left to writers outside
the project (the sqlite3 shell).
"""

import fcntl
import os
import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

# Held from BEGIN to COMMIT/ROLLBACK; as long as SQLite's own busy timeout before giving up.
WRITER_TIMEOUT_SEC = 30
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


class DatabaseWrapper(base.DatabaseWrapper):
    # What this connection holds while in a writing transaction: the lock it took (the process's
    # lock at the time; a fork replaces it) and the lock file's descriptor.
    _held_writer: "threading.Lock | None" = None
    _held_file: int | None = None

    def _start_transaction_under_autocommit(self):
        writer = _writer
        if not writer.acquire(timeout=WRITER_TIMEOUT_SEC):
            raise OperationalError("database is locked (waited for this process's writing transaction)")
        self._held_writer = writer
        try:
            fd = _lock_file(self.settings_dict["NAME"])
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits in the kernel, without the GIL
                self._held_file = fd
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

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
