"""The engine end to end: real Redis broker, real `rundramatiq` worker processes, real reaper."""

import threading
import time
from decimal import Decimal

import pytest
from dramatiq import get_broker

from executions import billing
from executions.models import Attempt, Execution, LedgerEntry, Task
from executions.services import execution_cancel, execution_create
from tests.conftest import configure, wait_for_running_attempt, wait_for_status

RESTAURANT = "Build a restaurant website with online booking and secure payments"
TERMINAL = {"completed", "partial", "failed", "cancelled", "budget_exceeded"}


def tasks_by_role(execution):
    tasks = {t.key: t for t in Task.objects.filter(execution=execution)}
    role = {}
    for task in tasks.values():
        text = task.description.lower()
        name = (
            "security"
            if task.pool == "security"
            else "database"
            if task.pool == "database"
            else ("backend" if "backend" in text else "frontend")
        )
        role[name] = task
    return role


def wait_until_acked(redis_server, message, timeout: float = 30) -> None:
    """Until a worker has processed and acknowledged the message: the Redis broker keeps a message
    in its queue's `.msgs` hash until the ack."""
    key = f"{get_broker().namespace}:{message.queue_name}.msgs"
    deadline = time.monotonic() + timeout
    while redis_server.hexists(key, message.message_id):
        assert time.monotonic() < deadline, f"message {message.message_id} never acknowledged"
        time.sleep(0.05)


def test_restaurant_request_runs_in_parallel_and_audits_after_the_backend(workers, client_and_key):
    # The seed's latencies (60, 90, 45, 120 s) scaled down 50×.
    configure(
        latency=0.5,
        options={
            "latency_rules": [
                {"match": "frontend", "latency_sec": 1.2},
                {"match": "backend", "latency_sec": 1.8},
                {"match": "schema", "latency_sec": 0.9},
                {"match": "audit", "latency_sec": 2.4},
            ]
        },
    )
    execution = execution_create(client=client_and_key[0], message=RESTAURANT, session_key="user123")
    done = wait_for_status(execution.pk, TERMINAL, timeout=60)
    assert done.status == "completed", done.final_response
    assert done.mode == "parallel"
    role = tasks_by_role(done)
    assert set(role) == {"frontend", "backend", "database", "security"}
    assert role["security"].blocked_by == [role["backend"].key]
    # Security starts only after the backend succeeded: in the backend's worker thread, by the
    # transaction that recorded the success (no message, no wait for a consumer)…
    assert role["security"].started_at >= role["backend"].finished_at
    audit, backend = (Attempt.objects.get(task=role[r]) for r in ("security", "backend"))
    assert audit.worker == backend.worker
    started = done.events.get(type="task.started", task_key=role["security"].key)
    assert started.payload["run_after"] == role["backend"].key
    # …while frontend, backend and database overlap in time.
    first_finish = min(role[r].finished_at for r in ("frontend", "backend", "database"))
    assert all(role[r].started_at < first_finish for r in ("frontend", "backend", "database"))
    # The seed's DAG: backend then security on the critical path (4.2 s) vs 6.3 s serial.
    assert done.estimated_duration_sec == pytest.approx(4.2) and done.serial_estimate_sec == pytest.approx(
        6.3
    )
    # Parallel, measured on the tasks themselves (a busy machine stretches both sides alike): the
    # whole took less than its tasks' own times one after another.
    makespan = (role["security"].finished_at - min(t.started_at for t in role.values())).total_seconds()
    serial = sum((t.finished_at - t.started_at).total_seconds() for t in role.values())
    assert makespan < serial - 1.0, (makespan, serial)
    # The audit saw the backend's files as context: its app, database, validation, two tests,
    # requirements, .gitignore and README.
    assert role["security"].result["summary"].startswith("Audited 9 files")
    assert done.fee_usd == Decimal("3.20") and done.cost_usd > 0
    usage = LedgerEntry.objects.filter(execution=done, kind="usage")
    assert usage.filter(attempt__isnull=False).count() == 4
    assert "Project complete" in done.final_response and done.quality_score == 1.0


def test_seed_scenario_1_backend_timeout_gives_a_partial_delivery_and_a_60_percent_refund(
    workers, client_and_key
):
    configure(
        latency=0.2,
        timeouts={"codegen": 1},
        retries=2,
        options={"latency_rules": [{"match": "backend", "latency_sec": 30}]},
    )
    execution = execution_create(
        client=client_and_key[0], message=RESTAURANT, session_key="user123", force_parallel=True
    )
    done = wait_for_status(execution.pk, TERMINAL, timeout=60)
    role = tasks_by_role(done)
    assert done.status == "partial"
    assert role["frontend"].status == "succeeded" and role["database"].status == "succeeded"
    assert role["backend"].status == "dead"
    attempts = list(Attempt.objects.filter(task=role["backend"]).order_by("number"))
    assert [a.status for a in attempts] == ["failed", "failed", "failed"]  # 1 + 2 retries
    assert all("LLMTimeout" in a.error for a in attempts)
    assert role["security"].status == "blocked" and role["security"].started_at is None
    # Backend (90 s) and security (120 s) of 315 s undelivered: 0.9 × 210/315 = 60% of $3.20.
    assert done.refund_usd == Decimal("1.92")
    assert LedgerEntry.objects.get(execution=done, kind="refund").amount_usd == Decimal("1.92")
    assert "Partial delivery" in done.final_response and "manual review" in done.final_response
    types = list(done.events.values_list("type", flat=True))
    assert types.count("task.retrying") == 2 and "task.dead" in types and "task.blocked" in types


def test_a_worker_killed_mid_task_is_noticed_and_the_task_completes_once(
    workers, client_and_key, redis_server
):
    configure(latency=3.0)
    execution = execution_create(client=client_and_key[0], message="Build a contact form", session_key="k")
    wait_for_running_attempt([execution.pk])
    time.sleep(0.5)
    workers.kill_workers()  # SIGKILL the whole worker process group mid-task
    workers.start_workers()
    done = wait_for_status(execution.pk, TERMINAL, timeout=60)
    assert done.status == "completed"
    task = Task.objects.get(execution=done)
    statuses = list(task.attempts.order_by("number").values_list("status", flat=True))
    assert statuses == ["lost", "succeeded"]
    assert task.failed_attempts == 0
    assert LedgerEntry.objects.filter(execution=done, kind="usage", attempt__isnull=False).count() == 1

    # A redelivery of the finished attempt's message does nothing.
    from executions.messages import send_run_task

    events_before = done.events.count()
    duplicate = send_run_task(task.pk, task.dispatch_count, task.pool)
    wait_until_acked(redis_server, duplicate)  # a worker took it and finished with it
    task.refresh_from_db()
    assert task.attempts.count() == 2 and done.events.count() == events_before


def test_pool_limits_hold_under_20_concurrent_executions(workers, client_and_key):
    limits = {"codegen": 3, "security": 2, "database": 2}
    configure(latency=0.25, **limits)
    peaks = dict.fromkeys(limits, 0)
    stop = threading.Event()

    def sample():
        from django.db import connection

        while not stop.is_set():
            for pool in limits:
                active = Task.objects.filter(pool=pool, status__in=["queued", "running"]).count()
                peaks[pool] = max(peaks[pool], active)
            time.sleep(0.02)
        connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    ids = [
        execution_create(client=client_and_key[0], message=RESTAURANT, session_key=f"u{i}").pk
        for i in range(20)
    ]
    try:
        for execution_id in ids:
            assert wait_for_status(execution_id, TERMINAL, timeout=120).status == "completed"
    finally:
        stop.set()
        sampler.join()
    assert all(peaks[pool] <= limits[pool] for pool in limits), peaks
    assert peaks["codegen"] == 3  # the limit was actually reached
    # The attempts' own intervals agree: never more running at once than the pool allows.
    for pool, limit in limits.items():
        points = []
        for started, finished in Attempt.objects.filter(task__pool=pool).values_list(
            "started_at", "finished_at"
        ):
            points += [(started, 1), (finished, -1)]
        running = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
            running += delta
            peak = max(peak, running)
        assert peak <= limit, (pool, peak)
    assert Task.objects.filter(execution_id__in=ids, status="succeeded").count() == 80
    assert Attempt.objects.filter(task__execution_id__in=ids).count() == 80


def test_cancel_stops_the_execution_and_discards_the_running_result(workers, client_and_key):
    configure(latency=2.0)
    execution = execution_create(client=client_and_key[0], message=RESTAURANT, session_key="c")
    wait_for_running_attempt([execution.pk])
    assert execution_cancel(Execution.objects.get(pk=execution.pk))
    done = Execution.objects.get(pk=execution.pk)
    assert done.status == "cancelled"
    # The abandoned attempts' workers finish their model call and report: their results must not
    # revive anything, and their tokens are billed as a late report, once. That bill is the signal.
    abandoned = [
        f"usage:{pk}:1"
        for pk in Attempt.objects.filter(task__execution=execution).values_list("pk", flat=True)
    ]
    deadline = time.monotonic() + 30
    while LedgerEntry.objects.filter(key__in=abandoned).count() < len(abandoned):
        assert time.monotonic() < deadline, "the abandoned attempts never reported"
        time.sleep(0.05)
    statuses = set(Task.objects.filter(execution=execution).values_list("status", flat=True))
    assert statuses == {"cancelled"}
    assert not Attempt.objects.filter(task__execution=execution, status__in=["running", "succeeded"]).exists()
    done = Execution.objects.get(pk=execution.pk)
    assert done.status == "cancelled"
    # Nothing was delivered: the default policy refunds 90 % of the fee, once, on the ledger.
    refunds = LedgerEntry.objects.filter(execution=execution, kind="refund")
    assert done.refund_usd == billing.money(done.fee_usd * Decimal("0.9")) > 0
    assert [r.amount_usd for r in refunds] == [done.refund_usd]
