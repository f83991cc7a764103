"""Who runs an attempt, and whether that process is gone.

`WORKER_ID` names a worker process as `host:pid:pid-namespace`. A reaper on the same machine (the
same host name and PID namespace) can tell that the process is gone and lose its attempts at
once, instead of waiting for their leases to lapse. Anywhere else — another host, another
container, an id of the older `host:pid` form — the lease is the only judge.
"""

import os
import socket
from pathlib import Path


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}"


def process_gone(worker: str) -> bool:
    """True only when `worker` is a process of this machine that no longer runs (or is a zombie)."""
    host, _, rest = worker.partition(":")
    pid, _, namespace = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or not namespace or namespace != _pid_namespace():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # The state follows the command name in parentheses: "Z" is a killed child nobody reaped yet.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
