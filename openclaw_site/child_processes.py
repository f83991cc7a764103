"""Children that die with the process that started them.

`make run`, the test session and the benchmarks start Redis, workers and a reaper; when their parent
is killed outright (SIGKILL, an OOM kill, a CI timeout) nothing would stop them, and an orphaned
worker keeps writing to a database that the next run reuses.
"""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the kernel sends this child SIGTERM when its parent exits (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
