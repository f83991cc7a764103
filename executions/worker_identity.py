"""Who runs an attempt, and whether that process is gone.

`WORKER_ID` names a worker process as `host:pid:pid-namespace`. A reaper on the same machine (the
same host name and PID namespace) can tell that the process is gone and lose its attempts at
once, instead of waiting for their leases to lapse. Anywhere else — another host, another
container, an id of the older `host:pid` form — the lease is the only judge.

Worker processes also announce themselves in Redis (`AnnounceWorker`), so the reaper finds a dead
worker that held no attempt but may have taken messages it never started. Redis may forget the
set (a restart): the requeue delay still covers those messages then.
"""

import logging
import os
import socket

import dramatiq

from pools.processes import start_time

log = logging.getLogger("openclaw.workers")
WORKERS_KEY = "openclaw:worker-processes"


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
        return start_time(int(pid)) is None  # no such process, or a zombie nobody reaped yet
    except OSError:
        return False


def gone_announced(client) -> list[str]:
    """The announced workers of this machine whose process is gone, forgotten as they are found."""
    gone = [w for w in (m.decode() for m in client.smembers(WORKERS_KEY)) if process_gone(w)]
    if gone:
        client.srem(WORKERS_KEY, *gone)
    return gone


class AnnounceWorker(dramatiq.Middleware):
    """A worker process adds its id to the set of workers when it boots and takes it out on a clean
    shutdown; one that dies stays there for the reaper to find."""

    def after_worker_boot(self, broker, worker):
        try:
            broker.client.sadd(WORKERS_KEY, WORKER_ID)
        except Exception:  # Redis away at boot: this worker is judged by its leases only
            log.warning("could not announce worker %s", WORKER_ID, exc_info=True)

    def before_worker_shutdown(self, broker, worker):
        try:
            broker.client.srem(WORKERS_KEY, WORKER_ID)
        except Exception:
            log.warning("could not withdraw worker %s", WORKER_ID, exc_info=True)
