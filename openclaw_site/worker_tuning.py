"""What a Dramatiq worker process does as it boots: interpreter settings (the garbage collector's
in the web and reaper processes too), warm-ups, and the clean-up after workers that were killed."""

import gc
import logging
import os
import sys

import dramatiq
from django.conf import settings
from django.db import connection

log = logging.getLogger("openclaw.workers")


class WorkerPriority(dramatiq.Middleware):
    """Workers may run below the web tier's CPU priority (`WORKER_NICE`, applied before any thread
    of theirs starts, so every thread, the verifiers' children and the sandboxes inherit it), for a
    host they share with daphne. Off by default: under the load benchmark, 5 changed nothing
    measurable (BENCHMARKS.md, "load"), and it slows whatever waits on the workers."""

    def before_worker_boot(self, broker, worker):
        if settings.WORKER_NICE > 0:
            os.nice(settings.WORKER_NICE)


class GilSwitchInterval(dramatiq.Middleware):
    """A worker thread back from the database or Redis needs the GIL again; while another thread
    runs Python (verifying an output, polling a queue) CPython makes it wait up to the switch
    interval, 5 ms by default, after every query. A transaction holds the write lock (SQLite) or
    its rows (PostgreSQL) through all of those waits, so workers use a shorter interval
    (`WORKER_GIL_SWITCH_INTERVAL_MS`; measured in BENCHMARKS.md)."""

    def before_worker_boot(self, broker, worker):
        sys.setswitchinterval(settings.WORKER_GIL_SWITCH_INTERVAL_MS / 1000)


def scratch_parents():
    """Where workers keep their scratch folders (pools.scratch): workspaces, bandit's copies."""
    from pools.verifiers import bandit_scan  # noqa: PLC0415 (the web process imports this module)

    return settings.OPENCLAW_WORKSPACES_DIR, bandit_scan.SCRATCH


def sweep_scratch_of_gone_processes() -> None:
    """Remove what this host's killed workers left in their scratch folders."""
    from pools.scratch import sweep_gone  # noqa: PLC0415 (see scratch_parents)

    for parent in scratch_parents():
        sweep_gone(parent)


class SweepScratchOfGoneWorkers(dramatiq.Middleware):
    """A worker killed mid-attempt leaves its workspaces and its copies of model output on disk
    (pools.scratch); each worker booting removes those of this host's processes that are gone (the
    reaper does too, every minute), and a worker that shuts down (its threads done) its own."""

    def before_worker_boot(self, broker, worker):
        sweep_scratch_of_gone_processes()

    def after_worker_shutdown(self, broker, worker):
        from pools.scratch import remove_own  # noqa: PLC0415 (see scratch_parents)

        for parent in scratch_parents():
            remove_own(parent)


class WarmAgentCode(dramatiq.Middleware):
    """A worker's first scan starts the fork server bandit's scans come from, which loads bandit
    and its plugins (pools/verifiers/bandit_scan.py); its first schema check sqlglot's PostgreSQL
    reader and SQLite writer, and the scratch SQLite child (about 60 ms in all); its first model
    call the provider SDKs the model profiles use (`llm.warm_providers`), its first event the
    publisher's thread and connection (`events.warm_publisher`), and its first reads of the hot
    path their compiled SQL (`sql.compile_reads`). Done after a message was taken, a fresh worker's
    first tasks would start late and run long, on the critical path of whatever execution they
    belonged to. All are done before the worker consumes anything."""

    def before_worker_boot(self, broker, worker):
        # Imported here, not at the top: the web process imports this module too (asgi.py) and
        # never verifies nor calls a model; only a booting worker loads the verifiers and the SDKs.
        from executions import events, sql  # noqa: PLC0415 (see above)
        from pools import llm  # noqa: PLC0415 (see above)
        from pools.verifiers.bandit_scan import run_bandit  # noqa: PLC0415 (see above)
        from pools.verifiers.schema import check_schema  # noqa: PLC0415 (see above)

        run_bandit([{"path": "warm_up.py", "content": "print('ready')\n"}])
        check_schema("CREATE TABLE warm_up (id SERIAL PRIMARY KEY, at TIMESTAMPTZ);", "postgresql")
        try:
            events.warm_publisher()
        except Exception:  # Redis not there yet: the first event connects
            log.warning("event publisher not connected at boot", exc_info=True)
        try:
            sql.compile_reads()
            llm.warm_providers()
        except Exception:  # no database yet (first migrate), a profile the SDK refuses: not fatal
            log.warning("model SDKs not loaded at boot; the first model call loads them", exc_info=True)
        finally:
            connection.close()


def freeze_startup_objects() -> None:
    """Take what a process made while starting (modules, Django's app registry, SDK clients) out
    of the garbage collector's reach. Otherwise each full collection walks them all with the GIL
    held: a pause of every thread of the process, in the middle of whatever transaction one of them
    holds, locks included. They live as long as the process."""
    gc.collect()
    gc.freeze()


class FreezeStartupObjects(dramatiq.Middleware):
    """`freeze_startup_objects` once a worker process has booted (listed after `WarmAgentCode`)."""

    def before_worker_boot(self, broker, worker):
        freeze_startup_objects()
