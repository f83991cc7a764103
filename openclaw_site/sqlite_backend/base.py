"""SQLite with one writing transaction at a time per process, queued on a Python lock.

SQLite lets one writer in at a time. A connection that finds the database locked waits in SQLite's
busy handler, which sleeps and retries on a fixed schedule (1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
50, 100 ms…), so a writer that lost a few races sleeps tens of milliseconds after the lock came
free. The worker's threads (and daphne's) therefore queue for `BEGIN IMMEDIATE` on a lock of their
own process, handed over the moment the previous transaction ends; the busy handler is left to
the rarer waits between processes.
"""

import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

# Held from BEGIN to COMMIT/ROLLBACK; as long as SQLite's own busy timeout before giving up.
_writer = threading.Lock()
WRITER_TIMEOUT_SEC = 30


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_writer = False

    def _start_transaction_under_autocommit(self):
        if not _writer.acquire(timeout=WRITER_TIMEOUT_SEC):
            raise OperationalError("database is locked (waited for this process's writing transaction)")
        self._holds_writer = True
        try:
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
        if self._holds_writer:
            self._holds_writer = False
            _writer.release()
