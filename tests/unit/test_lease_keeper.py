"""An attempt's lease keeper runs on a kept daemon thread: it renews the lease while the attempt
runs, notices when the attempt stops running, and leaves its thread to the next attempt's keeper."""

import threading
import time

import pytest

from executions.agent_attempt import KeeperThreads, LeaseKeeper
from executions.attempts import task_start
from executions.models import Attempt, Task
from tests.factories import make_client, make_execution, make_pools

WAIT_SEC = 10


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SEC
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def blocking_jobs(threads: KeeperThreads, count: int) -> tuple[list[int], threading.Event]:
    """Submit `count` jobs that each record their thread and wait for the returned event."""
    seen: list[int] = []
    release = threading.Event()

    def job():
        seen.append(threading.get_ident())
        release.wait(WAIT_SEC)

    for _ in range(count):
        threads.submit(job)
    wait_for(lambda: len(seen) == count, f"{count} jobs running")
    return seen, release


def test_keepers_run_side_by_side_and_a_finished_keepers_thread_takes_the_next():
    threads = KeeperThreads()
    first, release = blocking_jobs(threads, 2)
    assert len(set(first)) == 2  # two attempts at once: two threads
    release.set()
    wait_for(lambda: threads._idle == 2, "both threads idle")

    second, release = blocking_jobs(threads, 2)
    assert set(second) == set(first)  # no new thread started
    release.set()


def test_a_crashing_job_leaves_its_thread_serving(caplog):
    threads = KeeperThreads()
    ran = threading.Event()

    def crash():
        raise RuntimeError("boom")

    threads.submit(crash)
    wait_for(lambda: threads._idle == 1, "the thread idle again")
    threads.submit(ran.set)
    assert ran.wait(WAIT_SEC)
    assert "lease keeper crashed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_keeper_renews_a_running_attempts_lease_and_stops_when_it_no_longer_runs(settings):
    settings.OPENCLAW_LEASE_RENEW_SEC = 0.02
    make_pools()
    client, _ = make_client()
    execution = make_execution(client, [{"key": "backend"}])
    task = Task.objects.get(execution=execution, key="backend")
    Task.objects.filter(pk=task.pk).update(status="queued", dispatch_count=1)
    attempt = task_start(task.pk, 1, "w1", lease_sec=15)
    first_lease = attempt.lease_expires_at

    keeper = LeaseKeeper(attempt.pk, attempt.task, expected_output_tokens=100)
    keeper.start()
    wait_for(lambda: Attempt.objects.get(pk=attempt.pk).lease_expires_at > first_lease, "the lease renewed")
    Attempt.objects.filter(pk=attempt.pk).update(status="cancelled")
    assert keeper.lost.wait(WAIT_SEC)  # nobody wants its result any more
    keeper.stopped.set()
