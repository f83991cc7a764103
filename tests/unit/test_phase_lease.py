"""A phase's worker renews its lease while it works; an aggregation that keeps failing ends the
execution `failed` with the reason instead of leaving it in `aggregating` (actor bodies in this
process, no workers)."""

import threading
import time

import pytest
from django.db import OperationalError

from executions import result_aggregator
from executions.actors import run_task
from executions.models import Event, Execution, LedgerEntry, Task
from executions.planning import execution_plan
from executions.services import execution_create
from executions.states import ExecutionStatus, TaskStatus
from tests.conftest import configure

REQUEST = "Build a restaurant website with online booking and secure payments"


@pytest.fixture
def aggregating(transactional_db, redis_server, client_and_key) -> str:
    """An execution whose tasks are all done, waiting for its aggregation."""
    configure(latency=0.0)
    execution = execution_create(client=client_and_key[0], message=REQUEST, session_key="s", mode="parallel")
    execution_plan(execution.pk)
    for _ in range(50):
        queued = list(
            Task.objects.filter(execution=execution, status=TaskStatus.QUEUED).values_list(
                "id", "dispatch_count"
            )
        )
        if not queued:
            break
        for task_id, dispatch_no in queued:
            run_task.fn(task_id, dispatch_no)
    assert Execution.objects.get(pk=execution.pk).status == ExecutionStatus.AGGREGATING
    return execution.pk


def breaks_aggregation(monkeypatch, error: Exception) -> None:
    def check_tree(execution, tasks):
        raise error

    monkeypatch.setattr(result_aggregator, "check_tree", check_tree)


def test_an_aggregation_that_keeps_failing_ends_failed_with_the_reason(aggregating, monkeypatch):
    breaks_aggregation(monkeypatch, RuntimeError("the tree cannot be read"))

    for claim in range(1, result_aggregator.MAX_AGGREGATION_CLAIMS):
        assert result_aggregator.aggregate(aggregating) is None
        execution = Execution.objects.get(pk=aggregating)
        # Given back at once for the reaper to resend, not held until the lease lapses.
        assert (execution.status, execution.phase_claims, execution.phase_lease_until) == (
            ExecutionStatus.AGGREGATING,
            claim,
            None,
        )

    assert result_aggregator.aggregate(aggregating) == ExecutionStatus.FAILED
    execution = Execution.objects.get(pk=aggregating)
    assert execution.error == "aggregation failed: RuntimeError: the tree cannot be read"
    assert "the tree cannot be read" in execution.final_response
    assert execution.finished_at is not None
    # Settled like any failure: the refund by policy is on the ledger and the final event is out.
    assert LedgerEntry.objects.filter(execution=execution, kind="refund").exists() == (
        execution.refund_usd > 0
    )
    assert Event.objects.filter(execution=execution, type="execution.finished").count() == 1


def test_a_lost_database_connection_never_fails_the_execution(aggregating, monkeypatch):
    breaks_aggregation(monkeypatch, OperationalError("server closed the connection unexpectedly"))

    for _ in range(result_aggregator.MAX_AGGREGATION_CLAIMS + 1):
        assert result_aggregator.aggregate(aggregating) is None

    execution = Execution.objects.get(pk=aggregating)
    assert (execution.status, execution.phase_lease_until, execution.error) == (
        ExecutionStatus.AGGREGATING,
        None,
        "",
    )


def test_the_aggregators_lease_is_renewed_while_it_works(aggregating, monkeypatch, settings):
    checking, release = threading.Event(), threading.Event()
    real = result_aggregator.check_tree

    def slow_check_tree(execution, tasks):
        checking.set()
        assert release.wait(30)
        return real(execution, tasks)

    monkeypatch.setattr(result_aggregator, "check_tree", slow_check_tree)
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(result_aggregator.aggregate(aggregating)))
    worker.start()
    try:
        assert checking.wait(30)
        first = Execution.objects.get(pk=aggregating).phase_lease_until
        deadline = time.monotonic() + 30
        while Execution.objects.get(pk=aggregating).phase_lease_until == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        # Another worker's claim meanwhile finds the phase held.
        from executions.transitions import claim_phase

        assert claim_phase(aggregating, ExecutionStatus.AGGREGATING, lease_sec=60) is None
    finally:
        release.set()
        worker.join(60)
    assert outcome == [ExecutionStatus.COMPLETED]
    assert Execution.objects.get(pk=aggregating).phase_claims == 1
