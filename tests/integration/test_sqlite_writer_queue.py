"""SQLite: a process's writing transactions queue on its own lock instead of SQLite's busy handler."""

import os
import threading
import time

import pytest
from django.db import connection, connections, transaction

from executions.models import Execution
from openclaw_site.sqlite_backend import base as sqlite_backend
from tests.factories import make_client, make_execution

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite backend only")


def in_thread(fn, *args) -> threading.Thread:
    def run():
        try:
            fn(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_concurrent_writers_all_commit_and_none_is_lost(transactional_db):
    client, _ = make_client()
    execution = make_execution(client, [{"key": "a"}])

    def bump(times: int) -> None:
        for _ in range(times):
            with transaction.atomic():
                seq = Execution.objects.values_list("next_seq", flat=True).get(pk=execution.pk)
                time.sleep(0.001)  # a read-modify-write that only a serialized writer gets right
                Execution.objects.filter(pk=execution.pk).update(next_seq=seq + 1)

    before = Execution.objects.get(pk=execution.pk).next_seq
    threads = [in_thread(bump, 25) for _ in range(8)]
    for thread in threads:
        thread.join(timeout=60)
    assert Execution.objects.get(pk=execution.pk).next_seq == before + 8 * 25
    assert not sqlite_backend._writer.locked()


def test_a_rolled_back_transaction_hands_the_lock_on(transactional_db):
    with pytest.raises(RuntimeError), transaction.atomic():
        Execution.objects.update(status="failed")
        assert sqlite_backend._writer.locked()
        raise RuntimeError("abort")
    assert not sqlite_backend._writer.locked()
    finished = threading.Event()

    def writer() -> None:
        with transaction.atomic():
            Execution.objects.update(status="failed")
        finished.set()

    in_thread(writer).join(timeout=5)
    assert finished.is_set()


def test_a_writer_waits_on_the_lock_while_another_thread_writes(transactional_db):
    entered = threading.Event()

    def writer() -> None:
        with transaction.atomic():
            entered.set()

    with transaction.atomic():
        Execution.objects.update(status="failed")
        thread = in_thread(writer)
        assert not entered.wait(0.2)  # queued behind this transaction
    thread.join(timeout=5)
    assert entered.is_set()


def test_closing_a_connection_in_a_transaction_releases_the_lock(transactional_db):
    done = threading.Event()

    def abandon() -> None:
        transaction.atomic().__enter__()
        connection.close()  # e.g. a worker thread's connection dropped mid-transaction
        done.set()

    in_thread(abandon).join(timeout=5)
    assert done.is_set()
    assert not sqlite_backend._writer.locked()


def test_a_writer_in_another_process_waits_on_the_lock_file_not_in_the_busy_handler(transactional_db):
    """The other process blocks in flock, so the kernel wakes it the moment this commit releases."""
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    script = (
        "import django; django.setup()\n"
        "from django.db import transaction\n"
        "from executions.models import Execution\n"
        "with transaction.atomic():\n"
        "    Execution.objects.update(status='failed')\n"
    )
    env = dict(
        os.environ,
        SQLITE_PATH=str(connection.settings_dict["NAME"]),
        DJANGO_SETTINGS_MODULE="openclaw_site.settings",
    )
    env.pop("DATABASE_URL", None)
    with transaction.atomic():
        Execution.objects.update(status="failed")
        child = subprocess.Popen([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env)

        def child_waits_on_flock() -> (
            bool
        ):  # a blocked request is listed as "N: -> FLOCK ADVISORY WRITE <pid> …"
            return any(
                line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(child.pid)
                for line in Path("/proc/locks").read_text().splitlines()
            )

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not child_waits_on_flock():
            time.sleep(0.05)
        assert child_waits_on_flock() and child.poll() is None
    assert child.wait(timeout=20) == 0


def test_a_forked_process_starts_with_its_own_writer_lock(transactional_db):
    with transaction.atomic():
        Execution.objects.update(status="failed")
        assert sqlite_backend._writer.locked()
        pid = os.fork()
        if pid == 0:  # the child: not blocked by the transaction its parent was in when it forked
            os._exit(0 if sqlite_backend._writer.acquire(timeout=2) and not sqlite_backend._lock_files else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_hung_writer_in_another_process_makes_others_fail_naming_it(transactional_db, settings, caplog):
    """The wait for the lock file is bounded; the error names the holder's pid. Once the holder goes,
    writing works again in this process."""
    import logging
    import subprocess
    import sys

    from django.db import OperationalError

    script = (
        "import sys, django; django.setup()\n"
        "from django.db import transaction\n"
        "from executions.models import Execution\n"
        "with transaction.atomic():\n"
        "    Execution.objects.update(status='failed')\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.read()  # hung until the test closes stdin\n"
    )
    env = dict(
        os.environ,
        SQLITE_PATH=str(connection.settings_dict["NAME"]),
        DJANGO_SETTINGS_MODULE="openclaw_site.settings",
    )
    env.pop("DATABASE_URL", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        settings.OPENCLAW_SQLITE_WRITER_WAIT_SEC = 0.5
        outcome = []

        def writer() -> None:
            try:
                with transaction.atomic():
                    Execution.objects.update(status="cancelled")
                outcome.append("committed")
            except OperationalError as exc:
                outcome.append(exc)

        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="openclaw.db"):
            thread = in_thread(writer)
            thread.join(timeout=15)
        assert not thread.is_alive() and time.monotonic() - started < 10
        assert isinstance(outcome[0], OperationalError)
        assert f"pid {holder.pid}" in str(outcome[0]) and "OPENCLAW_SQLITE_WRITER_WAIT_SEC" in str(outcome[0])
        assert any(f"pid {holder.pid}" in r.getMessage() for r in caplog.records)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    settings.OPENCLAW_SQLITE_WRITER_WAIT_SEC = 20
    in_thread(writer).join(timeout=30)
    assert outcome[1:] == ["committed"]
