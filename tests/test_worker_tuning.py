"""Worker processes' interpreter settings."""

import sys

import pytest

from openclaw_site.worker_tuning import GilSwitchInterval


def test_a_worker_boots_with_the_configured_gil_switch_interval(settings):
    settings.WORKER_GIL_SWITCH_INTERVAL_MS = 1.0
    before = sys.getswitchinterval()
    try:
        GilSwitchInterval().before_worker_boot(broker=None, worker=None)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
