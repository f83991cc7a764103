"""The queues a worker process consumes: one per pool, following the pools in the database.

Kept apart from the actors: the broker loads the middleware here while it is being built, before
any actor may be declared and before Django's apps are ready (hence the deferred model import).
The database is read when a worker boots, never at import: a process that only sends messages (the
web server, the test session) must not open a connection while its settings may still change.
"""

import logging
import threading

import dramatiq
from django.conf import settings
from django.db import connection
from dramatiq import get_broker

from .messages import pool_queue_name

log = logging.getLogger("openclaw.workers")

# The seed's pools: their queues exist before the database does (first migrate).
DEFAULT_POOLS = ("codegen", "security", "database")
POOL_QUEUE_PREFIX = pool_queue_name("")
# The queues this worker process was told to consume (`rundramatiq --queues …`); None: every queue.
_consumed_queues: frozenset[str] | None = None


def consumed_pools() -> frozenset[str] | None:
    """The pools whose tasks this process may run: those whose queues it consumes (None: every pool)."""
    if _consumed_queues is None:
        return None
    return frozenset(
        q.removeprefix(POOL_QUEUE_PREFIX) for q in _consumed_queues if q.startswith(POOL_QUEUE_PREFIX)
    )


def declare_pool_queues() -> None:
    """Workers consume the queues declared when they boot: every pool in the database, and the defaults."""
    from pools.models import WorkerPool  # noqa: PLC0415 (see the module's docstring)

    broker = get_broker()
    names = set(DEFAULT_POOLS)
    try:
        names |= set(WorkerPool.objects.values_list("name", flat=True))
    except Exception:  # no database yet (first migrate): the defaults are enough
        pass
    for name in names:
        broker.declare_queue(pool_queue_name(name))


class FollowPoolQueues(dramatiq.Middleware):
    """A pool created or renamed in the admin gets consumers without a worker restart: a running
    worker declares every pool's queue every few seconds, and declaring a queue in a worker process
    adds its consumer."""

    def before_worker_boot(self, broker, worker):
        global _consumed_queues
        whitelist = getattr(worker, "consumer_whitelist", None)
        _consumed_queues = frozenset(whitelist) if whitelist else None
        # Declared before the worker adds its consumers, so it consumes every pool's queue from the start.
        try:
            declare_pool_queues()
        finally:
            connection.close()

    def after_worker_boot(self, broker, worker):
        stop = threading.Event()
        self.stop = stop
        threading.Thread(target=self._follow, args=(broker, stop), name="pool-queues", daemon=True).start()

    def before_worker_shutdown(self, broker, worker):
        if hasattr(self, "stop"):
            self.stop.set()

    @staticmethod
    def _follow(broker, stop: threading.Event) -> None:
        from pools.models import WorkerPool  # noqa: PLC0415 (see the module's docstring)

        while not stop.wait(settings.OPENCLAW_POOL_QUEUES_REFRESH_SEC):
            try:
                for name in WorkerPool.objects.values_list("name", flat=True):
                    if pool_queue_name(name) not in broker.get_declared_queues():
                        broker.declare_queue(pool_queue_name(name))
            except Exception:  # the database is away for a moment: the next pass tries again
                log.warning("could not read the pools to follow their queues", exc_info=True)
            finally:
                connection.close()
