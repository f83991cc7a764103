import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from executions.reaper import reap
from openclaw_site.worker_tuning import freeze_startup_objects, sweep_scratch_of_gone_processes

log = logging.getLogger("openclaw.reaper")
SCRATCH_SWEEP_SEC = 60  # a killed worker whose host starts no new one still has its leftovers removed


class Command(BaseCommand):
    help = "Expire lost and overdue attempts, resend lost messages and dispatch ready work, every second."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, once=False, **options):
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        freeze_startup_objects()  # its passes hold pool locks: no collection pause walks start-up objects
        swept = 0.0
        while not stopping:
            started = time.monotonic()
            try:
                stats = reap()
                if any(stats[k] for k in ("lost", "expired", "resent", "phases", "approvals_expired")):
                    log.info("reaper: %s", stats)
                if started - swept >= SCRATCH_SWEEP_SEC:
                    swept = started
                    sweep_scratch_of_gone_processes()
            except Exception:
                log.exception("reaper pass failed")
            finally:
                close_old_connections()
            if once:
                return
            time.sleep(max(0.0, settings.OPENCLAW_REAPER_INTERVAL_SEC - (time.monotonic() - started)))
