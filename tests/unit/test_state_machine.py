"""Task and attempt transitions: compare-and-set, retries, dead, blocked (no broker)."""

from executions import billing
from executions.attempts import Continuation, attempt_fail, attempt_succeed, task_start
from executions.models import Attempt, Execution, Task
from executions.reaper import reap
from pools import llm
from tests.factories import make_client, make_execution, make_pools, run_task_messages


def queue(task: Task) -> int:
    Task.objects.filter(pk=task.pk).update(status="queued", dispatch_count=task.dispatch_count + 1)
    return task.dispatch_count + 1


def setup_chain(retries=1):
    make_pools(retries=retries)
    client, _ = make_client()
    execution = make_execution(
        client,
        [
            {"key": "backend"},
            {"key": "audit", "pool": "security", "blocked_by": ["backend"]},
            {"key": "report", "blocked_by": ["audit"]},
            {"key": "frontend"},
        ],
    )
    return execution, Task.objects.get(execution=execution, key="backend")


def test_a_duplicate_or_stale_message_starts_nothing(db, django_capture_on_commit_callbacks):
    _, backend = setup_chain()
    dispatch_no = queue(backend)
    assert task_start(backend.pk, dispatch_no - 1, "w1", lease_sec=15) is None  # an older dispatch
    first = task_start(backend.pk, dispatch_no, "w1", lease_sec=15)
    assert first is not None
    assert task_start(backend.pk, dispatch_no, "w2", lease_sec=15) is None  # redelivered
    assert Attempt.objects.count() == 1


def test_success_promotes_dependents_and_a_second_report_changes_nothing(
    db, django_capture_on_commit_callbacks
):
    execution, backend = setup_chain()
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    # The success queues, in its own transaction, the dependent it made ready and, into the slot it
    # freed, the pool's ready task; their messages go out on commit.
    with run_task_messages() as send:
        with django_capture_on_commit_callbacks() as callbacks:
            assert attempt_succeed(attempt.pk, result={"summary": "ok", "files": [], "findings": []})
            assert not attempt_succeed(attempt.pk, result={"summary": "again", "files": [], "findings": []})
        assert not send
        for callback in callbacks:
            callback()
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert statuses == {"backend": "succeeded", "audit": "queued", "report": "pending", "frontend": "queued"}
    assert sorted(task_id for task_id, _, _ in send) == sorted(
        Task.objects.filter(execution=execution, status="queued").values_list("pk", flat=True)
    )
    assert Task.objects.get(pk=backend.pk).result["summary"] == "ok"
    types = list(execution.events.values_list("type", flat=True))
    assert types[-4:] == ["task.succeeded", "task.ready", "task.queued", "task.queued"]
    assert types.count("task.succeeded") == 1


def succeed_with(attempt, continuation, capture_on_commit):
    """The attempt's success with this continuation, its on-commit work run; (its answer, the mock
    of the messages sent)."""
    with run_task_messages() as send, capture_on_commit(execute=True):
        done = attempt_succeed(
            attempt.pk, result={"summary": "ok", "files": [], "findings": []}, continuation=continuation
        )
    return done, send


def test_a_success_with_a_continuation_starts_a_task_it_made_ready_in_its_own_transaction(
    db, django_capture_on_commit_callbacks
):
    execution, backend = setup_chain()
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    here = Continuation("w1", lease_sec=15, pools=None, within_sec=3600)
    done, send = succeed_with(attempt, here, django_capture_on_commit_callbacks)
    assert done and done.next_attempt is not None
    # The first ready task in dispatch order (audit's pool sorts first: codegen, security) runs here,
    # with an attempt of its own and its lease; the other gets its message.
    started = done.next_attempt
    assert started.task.key == "frontend" and started.task.execution_id == execution.pk
    assert started.worker == "w1" and started.number == 1 and started.status == "running"
    assert started.started_at >= Task.objects.get(pk=backend.pk).finished_at
    assert started.lease_expires_at > started.started_at
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert statuses == {"backend": "succeeded", "audit": "queued", "report": "pending", "frontend": "running"}
    assert [task_id for task_id, _, _ in send] == [Task.objects.get(execution=execution, key="audit").pk]
    types = list(execution.events.values_list("type", flat=True))
    assert types[-5:] == ["task.succeeded", "task.ready", "task.queued", "task.queued", "task.started"]
    assert execution.events.get(type="task.started", task_key="frontend").payload["run_after"] == "backend"
    # Its message never sent, a stray one (the reaper's resend) still starts nothing twice.
    frontend = Task.objects.get(execution=execution, key="frontend")
    assert task_start(frontend.pk, frontend.dispatch_count, "w2", lease_sec=15) is None
    assert Attempt.objects.filter(task=frontend).count() == 1


def test_a_continuation_runs_only_what_its_worker_may_run(db, django_capture_on_commit_callbacks):
    execution, backend = setup_chain()
    Task.objects.filter(execution=execution, key="frontend").update(timeout_sec=7200)
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    # A worker consuming the security pool's queue only, an hour of the message's time limit left:
    # frontend (codegen, 2 h timeout) is not for it, audit is.
    here = Continuation("w1", lease_sec=15, pools=frozenset({"security"}), within_sec=3600)
    done, send = succeed_with(attempt, here, django_capture_on_commit_callbacks)
    assert done.next_attempt.task.key == "audit"
    assert [task_id for task_id, _, _ in send] == [Task.objects.get(execution=execution, key="frontend").pk]


def test_a_continuation_sends_the_message_of_a_task_whose_timeout_outlasts_the_time_left(
    db, django_capture_on_commit_callbacks
):
    execution, backend = setup_chain()
    Task.objects.filter(execution=execution).update(timeout_sec=7200)
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    here = Continuation("w1", lease_sec=15, pools=None, within_sec=3600)
    done, send = succeed_with(attempt, here, django_capture_on_commit_callbacks)
    assert done and done.next_attempt is None
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert statuses == {"backend": "succeeded", "audit": "queued", "report": "pending", "frontend": "queued"}
    assert sorted(task_id for task_id, _, _ in send) == sorted(
        Task.objects.filter(execution=execution, status="queued").values_list("pk", flat=True)
    )


def test_failures_retry_until_max_retries_then_dead_and_dependents_blocked(
    db, django_capture_on_commit_callbacks
):
    execution, backend = setup_chain(retries=2)
    for number in (1, 2, 3):
        attempt = task_start(backend.pk, queue(Task.objects.get(pk=backend.pk)), "w1", lease_sec=15)
        assert attempt.number == number
        with django_capture_on_commit_callbacks():
            assert attempt_fail(attempt.pk, "LLMTimeout: no reply within 300s")
        backend.refresh_from_db()
        assert backend.status == ("ready" if number < 3 else "dead")
    statuses = dict(Task.objects.filter(execution=execution).values_list("key", "status"))
    assert statuses["audit"] == "blocked" and statuses["report"] == "blocked"
    assert Task.objects.get(execution=execution, key="report").error == "blocked: needs audit"
    types = list(execution.events.values_list("type", flat=True))
    assert types.count("task.retrying") == 2 and types.count("task.dead") == 1


def test_execution_goes_to_aggregating_only_when_nothing_can_progress(db, django_capture_on_commit_callbacks):
    execution, backend = setup_chain(retries=0)
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    with django_capture_on_commit_callbacks() as callbacks:
        attempt_fail(attempt.pk, "fatal")
    assert Execution.objects.get(pk=execution.pk).status == "executing"  # frontend still open
    frontend = Task.objects.get(execution=execution, key="frontend")
    attempt = task_start(frontend.pk, queue(frontend), "w1", lease_sec=15)
    with django_capture_on_commit_callbacks() as callbacks:
        attempt_succeed(attempt.pk, result={"summary": "ok", "files": [], "findings": []})
    assert Execution.objects.get(pk=execution.pk).status == "aggregating"
    assert callbacks  # the aggregation message goes out on commit


def test_reaper_requeues_a_lost_worker_without_burning_a_retry(db, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    _, backend = setup_chain(retries=0)
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    Attempt.objects.filter(pk=attempt.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False):
        stats = reap()
    assert stats["lost"] == 1
    backend.refresh_from_db()
    assert backend.status in ("ready", "queued") and backend.failed_attempts == 0
    assert Attempt.objects.get(pk=attempt.pk).status == "lost"


def test_reaper_expires_an_attempt_past_its_deadline_as_a_failure(db, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    _, backend = setup_chain(retries=0)
    attempt = task_start(backend.pk, queue(backend), "w1", lease_sec=15)
    Attempt.objects.filter(pk=attempt.pk).update(deadline_at=timezone.now() - timedelta(seconds=30))
    with django_capture_on_commit_callbacks(execute=False):
        assert reap()["expired"] == 1
    backend.refresh_from_db()
    assert backend.status == "dead" and "timeout after 60s" in backend.error


def test_a_link_of_a_chain_stays_within_its_query_budget(
    db, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    """Dependency succeeds → dependent queued → dependent started: the critical path bench/dispatch.py
    measures. Everything here waits its turn at the write lock, so its query count is watched:
    17 and 7 on SQLite, 16 and 7 on PostgreSQL (which locks the dependents' pools, but reserves
    event seqs in the statement that inserts the events and raises the execution's totals in the
    one that inserts the ledger entry), in a test's transaction (a savepoint and its release each).
    The success is billed: its usage goes into the updates that close the attempt and the task."""
    from django.db import connection

    success_budget, start_budget = {"sqlite": (17, 7), "postgresql": (16, 7)}[connection.vendor]
    make_pools()
    client, _ = make_client()
    execution = make_execution(client, [{"key": "a"}, {"key": "b", "pool": "security", "blocked_by": ["a"]}])
    a = Task.objects.get(execution=execution, key="a")
    attempt = task_start(a.pk, queue(a), "w1", lease_sec=15)
    result = {"summary": "ok", "files": [{"path": "app.py", "content": "print(1)\n"}], "findings": []}
    usage = billing.AttemptUsage.of(
        llm.resolve(None), llm.Completion(text="{}", input_tokens=900, output_tokens=300)
    )
    with (
        run_task_messages() as send,
        django_assert_max_num_queries(success_budget),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert attempt_succeed(attempt.pk, result=result, usage=usage)
    [(task_id, dispatch_no, pool_name)] = send
    assert (Task.objects.get(pk=task_id).key, pool_name) == ("b", "security")
    with django_assert_max_num_queries(start_budget), django_capture_on_commit_callbacks(execute=True):
        assert task_start(task_id, dispatch_no, "w1", lease_sec=15).task.key == "b"
    assert Task.objects.get(pk=a.pk).tokens_in == 900


def test_a_success_that_readies_many_tasks_costs_no_more_queries_than_one_that_readies_few(
    db, django_capture_on_commit_callbacks
):
    """Promotion and dispatch change their tasks in one statement each, whatever the fan-out: a
    root with 40 dependents (8 queued at once, the pools' limits) takes the queries one with 4 does."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_pools({"codegen": 4, "security": 2, "database": 2})
    client, _ = make_client()
    counts, queued = [], []
    for fan_out in (4, 40):
        pools = ("codegen", "security", "database")
        execution = make_execution(
            client,
            [{"key": "root"}]
            + [{"key": f"t{i}", "pool": pools[i % 3], "blocked_by": ["root"]} for i in range(fan_out)],
        )
        root = Task.objects.get(execution=execution, key="root")
        attempt = task_start(root.pk, queue(root), "w1", lease_sec=15)
        with (
            run_task_messages(),
            CaptureQueriesContext(connection) as captured,
            django_capture_on_commit_callbacks(execute=True),
        ):
            assert attempt_succeed(attempt.pk, result={"summary": "ok", "files": [], "findings": []})
        counts.append(len(captured.captured_queries))
        queued.append(Task.objects.filter(execution=execution, status="queued").count())
        Task.objects.filter(execution=execution).update(status="succeeded")  # frees the pools' slots
    assert queued == [4, 8]
    assert counts[1] <= counts[0], counts
