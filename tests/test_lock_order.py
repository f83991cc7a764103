"""PostgreSQL lock order: a dispatcher holding a pool row never waits for an execution's row, so a
success that holds its execution and waits for that pool at its end cannot deadlock with it."""

import threading
from unittest import mock

import pytest
from django.db import connection, connections, transaction

from executions.models import Task
from executions.parallel_executor import _dispatch_pool, dispatch_ready_tasks, lock_execution
from tests.factories import make_client, make_execution, make_pools

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL only")


def in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # reported by the test
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_dispatcher_skips_the_tasks_of_an_execution_another_transaction_holds(transactional_db):
    make_pools({"codegen": 4, "security": 4, "database": 4})
    client, _ = make_client()
    held = make_execution(client, [{"key": "h", "pool": "security", "priority": 0}])
    other = make_execution(client, [{"key": "o", "pool": "security", "priority": 1}])
    with mock.patch("pools.tasks.send_run_task"):
        with transaction.atomic():
            lock_execution(held.pk)  # e.g. a success of `held`, about to queue its own tasks
            thread, out = in_thread(lambda: dispatch_ready_tasks("security"))
            thread.join(timeout=10)
            assert not thread.is_alive(), "the dispatcher waited for the held execution"
            assert out == {"value": 1}
            # The holder queues its own task at its end, waiting for the pool row the dispatcher freed.
            assert _dispatch_pool("security", within_execution=held.pk) == 1
    assert dict(Task.objects.values_list("key", "status")) == {"h": "queued", "o": "queued"}
