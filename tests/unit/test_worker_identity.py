"""A worker process that is gone from this machine loses its attempts in the reaper's next pass,
without waiting for their leases; anything the reaper cannot judge waits for the lease."""

import os
import signal
import socket
import subprocess
from datetime import timedelta

from django.utils import timezone

from executions.attempts import task_start
from executions.models import Attempt, Task
from executions.reaper import reap
from executions.worker_identity import WORKER_ID, process_gone
from tests.factories import make_client, make_execution, make_pools


def worker_id(pid: int) -> str:
    host, _, namespace = WORKER_ID.split(":")
    return f"{host}:{pid}:{namespace}"


def dead_pid() -> int:
    child = subprocess.Popen(["sleep", "60"])
    child.kill()
    child.wait()
    return child.pid


def test_a_running_process_is_not_gone_and_a_dead_or_zombie_one_is():
    assert WORKER_ID.split(":")[1] == str(os.getpid())
    assert not process_gone(WORKER_ID)
    assert process_gone(worker_id(dead_pid()))

    zombie = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(zombie.pid, signal.SIGKILL)
        # Killed but not waited for: a zombie until its parent reaps it.
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)
        assert process_gone(worker_id(zombie.pid))
    finally:
        zombie.wait()


def test_what_the_reaper_cannot_judge_is_never_gone():
    pid = dead_pid()
    namespace = WORKER_ID.split(":")[2]
    assert not process_gone(f"another-host:{pid}:{namespace}")  # another machine
    assert not process_gone(f"{socket.gethostname()}:{pid}:1")  # another PID namespace (a container)
    assert not process_gone(f"{socket.gethostname()}:{pid}")  # the older form, without a namespace
    assert not process_gone("w1")


def queued(task: Task) -> int:
    Task.objects.filter(pk=task.pk).update(status="queued", dispatch_count=task.dispatch_count + 1)
    return task.dispatch_count + 1


def test_the_reaper_loses_a_dead_workers_attempt_at_once_and_resends_queued_messages(
    db, django_capture_on_commit_callbacks
):
    make_pools(retries=0)
    client, _ = make_client()
    execution = make_execution(client, [{"key": "backend"}, {"key": "frontend"}, {"key": "alive"}])
    backend, frontend, alive = (
        Task.objects.get(execution=execution, key=k) for k in ("backend", "frontend", "alive")
    )
    dead = task_start(backend.pk, queued(backend), worker_id(dead_pid()), lease_sec=15)
    living = task_start(alive.pk, queued(alive), WORKER_ID, lease_sec=15)
    queued(frontend)  # its message may be among those the dead worker had taken
    Task.objects.filter(pk=frontend.pk).update(queued_at=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=False):
        stats = reap()

    assert stats["lost"] == 1 and stats["resent"] == 1
    assert Attempt.objects.get(pk=dead.pk).status == "lost"
    assert Attempt.objects.get(pk=dead.pk).error == "worker lost: its process is gone"
    assert Attempt.objects.get(pk=living.pk).status == "running"  # its lease still holds
    backend.refresh_from_db()
    assert backend.status in ("ready", "queued") and backend.failed_attempts == 0


def test_without_a_dead_worker_a_queued_message_waits_for_the_requeue_delay(
    db, django_capture_on_commit_callbacks
):
    make_pools()
    client, _ = make_client()
    execution = make_execution(client, [{"key": "frontend"}])
    frontend = Task.objects.get(execution=execution, key="frontend")
    queued(frontend)
    Task.objects.filter(pk=frontend.pk).update(queued_at=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=False):
        assert reap()["resent"] == 0


def test_a_dead_announced_worker_with_no_attempt_gets_queued_messages_resent_at_once(
    db, redis_server, django_capture_on_commit_callbacks
):
    from executions.worker_identity import WORKERS_KEY

    make_pools()
    client, _ = make_client()
    execution = make_execution(client, [{"key": "frontend"}])
    frontend = Task.objects.get(execution=execution, key="frontend")
    queued(frontend)  # its message may have been taken by the dead worker
    Task.objects.filter(pk=frontend.pk).update(queued_at=timezone.now() - timedelta(seconds=1))
    dead = worker_id(dead_pid())
    redis_server.sadd(WORKERS_KEY, dead, WORKER_ID)

    with django_capture_on_commit_callbacks(execute=False):
        assert reap()["resent"] == 1
    assert redis_server.smembers(WORKERS_KEY) == {WORKER_ID.encode()}  # the dead one is forgotten
    with django_capture_on_commit_callbacks(execute=False):
        assert reap()["resent"] == 0  # once only: the next pass waits for the requeue delay again
