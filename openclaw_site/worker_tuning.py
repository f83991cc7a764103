"""Interpreter settings for Dramatiq worker processes, applied when a worker boots."""

import sys

import dramatiq
from django.conf import settings


class GilSwitchInterval(dramatiq.Middleware):
    """A worker thread back from the database or Redis needs the GIL again; while another thread
    runs Python (verifying an output, polling a queue) CPython makes it wait up to the switch
    interval, 5 ms by default, after every query. A transaction holds the write lock (SQLite) or
    its rows (PostgreSQL) through all of those waits, so workers use a shorter interval
    (`WORKER_GIL_SWITCH_INTERVAL_MS`; measured in BENCHMARKS.md)."""

    def before_worker_boot(self, broker, worker):
        sys.setswitchinterval(settings.WORKER_GIL_SWITCH_INTERVAL_MS / 1000)
