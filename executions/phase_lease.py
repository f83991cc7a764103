"""The lease of an execution's phase (planning, aggregation), held for as long as its worker works.

A worker that takes a phase (`transitions.claim_phase`) gets a short lease and renews it every few
seconds, like an attempt's, so a worker killed mid-phase is replaced within one lease rather than
after the longest the phase could take (a PM call, the integration gate, the synthesis). A renewal
is a compare-and-set on the claim's number: once another worker has taken the phase, this one's
renewals change nothing and `lost` says so.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from .models import Execution

log = logging.getLogger("openclaw.phases")


def renew_phase(execution_id: str, status: str, claim: int, *, lease_sec: float) -> bool:
    """Extend the phase's lease for the worker holding claim `claim`; False once it is not the holder."""
    return bool(
        Execution.objects.filter(pk=execution_id, status=status, phase_claims=claim).update(
            phase_lease_until=timezone.now() + timedelta(seconds=lease_sec)
        )
    )


def release_phase(execution_id: str, status: str, claim: int) -> bool:
    """Give the phase up at once (this worker could not finish it): the reaper resends it once its
    message is stale (`OPENCLAW_REQUEUE_AFTER_SEC`), without waiting for the lease to lapse."""
    return bool(
        Execution.objects.filter(pk=execution_id, status=status, phase_claims=claim).update(
            phase_lease_until=None
        )
    )


class PhaseLease(threading.Thread):
    """`with PhaseLease(execution_id, status, claim):` renews the claim's lease while the body runs."""

    def __init__(self, execution_id: str, status: str, claim: int):
        super().__init__(name=f"phase-{execution_id}", daemon=True)
        self.execution_id = execution_id
        self.status = status
        self.claim = claim
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def __enter__(self) -> "PhaseLease":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.join()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.OPENCLAW_LEASE_RENEW_SEC):
                try:
                    renewed = renew_phase(
                        self.execution_id, self.status, self.claim, lease_sec=settings.OPENCLAW_LEASE_SEC
                    )
                except DatabaseError as exc:
                    # A dropped connection: reconnect on the next beat; the lease outlives a few misses.
                    log.warning("phase lease of %s failed (%s); reconnecting", self.execution_id, exc)
                    connection.close()
                    continue
                if not renewed:  # the phase moved on, or another worker took it
                    self.lost.set()
                    return
        finally:
            connection.close()
