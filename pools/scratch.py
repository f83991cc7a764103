"""Scratch folders per process, so that what a killed process leaves behind is found and removed.

Workspaces and the verifiers' copies of model output are made inside a folder named after the
process that made them, `proc-<pid>-<start time>-<host>` under their parent. A process removes its
own scratch as it goes, but one killed mid-attempt (SIGKILL, the OOM killer) cannot: a booting
worker sweeps the folders of this host's processes that no longer run (`processes.start_time`, which
tells a process from a newer one given the same pid). Without /proc nothing is swept.
"""

import logging
import os
import shutil
import socket
from pathlib import Path

from .processes import start_time

log = logging.getLogger("openclaw.workers")
PREFIX = "proc-"
_made: dict[tuple[Path, int], Path] = {}  # (parent, pid) → this process's folder, once made


def process_dir(parent: Path) -> Path:
    """This process's scratch folder under `parent`, made if need be (traversable by the sandbox's
    user, who works in folders inside it)."""
    pid = os.getpid()  # a forked child gets a folder of its own
    key = (parent, pid)
    if key not in _made:
        path = parent / f"{PREFIX}{pid}-{start_time(pid) or 0}-{socket.gethostname()}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        _made[key] = path
    return _made[key]


def remove_own(parent: Path) -> None:
    """Remove this process's scratch folder under `parent`, with whatever is left in it (a worker
    shutting down once its work is over)."""
    path = _made.pop((parent, os.getpid()), None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def sweep_gone(parent: Path) -> list[Path]:
    """Remove the scratch folders under `parent` of this host's processes that no longer run;
    returns them. Other hosts' folders (a shared volume) are left to their own workers."""
    if start_time(os.getpid()) is None or not parent.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for entry in parent.iterdir():
        parts = entry.name.removeprefix(PREFIX).split("-", 2)
        if not entry.name.startswith(PREFIX) or len(parts) != 3 or parts[2] != host:
            continue
        pid, started, _ = parts
        try:
            if not pid.isdigit() or start_time(int(pid)) == started:
                continue
        except OSError:  # /proc cannot say: the process may still run
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.info("removed the scratch of %d processes that are gone, under %s", len(removed), parent)
    return removed
