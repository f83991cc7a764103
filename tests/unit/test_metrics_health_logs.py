"""Operations: /metrics (computed from the database), /healthz, and the seed's log patterns."""

import logging
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import OperationalError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from executions.agent_attempt import LeaseKeeper
from executions.models import Attempt, Client, Conflict, Execution, LedgerEntry, Task
from pools.models import WorkerPool


class Samples(dict):
    """Prometheus samples looked up as samples[name, {label: value}]."""

    def __getitem__(self, key):
        name, labels = key
        return super().__getitem__((name, tuple(sorted(labels.items()))))


def parse_metrics(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            dict.__setitem__(samples, (sample.name, tuple(sorted(sample.labels.items()))), sample.value)
    return samples


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return parse_metrics(response.content.decode())


def finished_execution(client, seconds, status="completed", mode="parallel"):
    start = timezone.now() - timedelta(seconds=seconds + 5)
    return Execution.objects.create(
        id=Execution.new_id("m"),
        client=client,
        session_key="m",
        message="x",
        status=status,
        mode=mode,
        started_at=start,
        finished_at=start + timedelta(seconds=seconds),
    )


@pytest.mark.django_db
def test_metrics_are_exact_aggregates_of_the_database(client):
    acme = Client.objects.create(name="acme")
    WorkerPool.objects.create(name="codegen", max_concurrent=3)
    WorkerPool.objects.create(name="security", max_concurrent=2)
    for seconds in (100, 140, 200):
        finished_execution(acme, seconds)
    running = Execution.objects.create(
        id=Execution.new_id("m"),
        client=acme,
        session_key="m",
        message="x",
        status="executing",
        mode="parallel",
    )
    for key, status in (("a", "ready"), ("b", "queued"), ("c", "running"), ("d", "dead")):
        Task.objects.create(execution=running, key=key, pool="codegen", description=key, status=status)
    done = Task.objects.create(
        execution=running, key="e", pool="security", description="e", status="succeeded"
    )
    start = timezone.now() - timedelta(minutes=5)
    for number, (seconds, outcome) in enumerate([(4, "failed"), (20, "succeeded")], start=1):
        attempt = Attempt.objects.create(
            task=done,
            number=number,
            status=outcome,
            model="qwen",
            started_at=start,
            finished_at=start + timedelta(seconds=seconds),
            lease_expires_at=start,
            deadline_at=start,
        )
        LedgerEntry.objects.create(
            execution=running,
            client=acme,
            kind="usage",
            key=f"usage:{attempt.pk}:1",
            amount_usd=Decimal("0.25"),
            attempt=attempt,
            pool="security",
            model="qwen",
            tokens_in=1000,
            tokens_out=500,
        )
    LedgerEntry.objects.create(
        execution=running, client=acme, kind="fee", key=f"fee:{running.pk}", amount_usd=Decimal("2")
    )
    Conflict.objects.create(execution=running, kind="security_finding", description="CSRF", status="resolved")
    Conflict.objects.create(execution=running, kind="security_finding", description="SQLi", status="detected")
    Conflict.objects.create(
        execution=running, kind="file_collision", description="two writers", status="resolved"
    )

    m = scrape(client)
    run = {"status": "completed", "mode": "parallel"}
    assert m["parallel_execution_duration_seconds_count", run] == 3
    assert m["parallel_execution_duration_seconds_sum", run] == pytest.approx(440)
    assert m["parallel_execution_duration_seconds_bucket", {**run, "le": "150.0"}] == 2
    assert m["parallel_execution_duration_seconds_bucket", {**run, "le": "+Inf"}] == 3
    assert m["parallel_executions", {"status": "executing"}] == 1
    assert m["worker_pool_queue_length", {"pool": "codegen"}] == 2
    assert m["worker_pool_queue_length", {"pool": "security"}] == 0
    assert m["worker_pool_running", {"pool": "codegen"}] == 1
    assert m["worker_pool_max_concurrent", {"pool": "codegen"}] == 3
    assert m["parallel_execution_conflicts_total", {"kind": "security_finding"}] == 2
    assert m["parallel_execution_conflicts_resolved_total", {"kind": "security_finding"}] == 1
    assert m["parallel_execution_conflicts_total", {"kind": "file_collision"}] == 1
    ok = {"pool": "security", "model": "qwen", "outcome": "succeeded"}
    assert m["parallel_execution_task_duration_seconds_count", ok] == 1
    assert m["parallel_execution_task_duration_seconds_sum", ok] == pytest.approx(20)
    assert m["parallel_execution_task_duration_seconds_bucket", {**ok, "le": "10.0"}] == 0
    assert m["parallel_execution_task_duration_seconds_bucket", {**ok, "le": "30.0"}] == 1
    assert m["parallel_execution_task_retries_total", {"pool": "security", "model": "qwen"}] == 1
    assert m["parallel_execution_tasks", {"pool": "codegen", "status": "dead"}] == 1
    usage = {"pool": "security", "model": "qwen"}
    assert m["parallel_execution_tokens_total", {**usage, "kind": "input"}] == 2000
    assert m["parallel_execution_tokens_total", {**usage, "kind": "output"}] == 1000
    assert m["parallel_execution_cost_usd_total", usage] == pytest.approx(0.5)


@pytest.mark.django_db
def test_healthz_reports_each_part(client, settings, monkeypatch):
    healthy = client.get("/healthz")
    assert healthy.status_code == 200
    body = healthy.json()
    assert body.pop("sandbox")["available"] in (True, False)  # tests/*/test_sandbox*.py: what it says
    assert body == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}, "failed": []}

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    no_redis = client.get("/healthz")
    assert no_redis.status_code == 503 and no_redis.json()["failed"] == ["redis"]

    from openclaw_site import health

    class BrokenConnection:
        def cursor(self):
            raise OperationalError("could not connect to server")

    monkeypatch.setattr(health, "connection", BrokenConnection())
    both = client.get("/healthz")
    assert both.status_code == 503 and both.json()["failed"] == ["database", "redis"]
    assert "could not connect" in both.json()["checks"]["database"]


def test_slow_attempt_is_logged_once_with_execution_and_task(caplog):
    task = Task(
        execution_id="exec_demo_1_abc",
        key="task_2",
        pool="codegen",
        timeout_sec=180,
        tokens_in=40_000,
        tokens_out=20_000,
        failed_attempts=1,
        max_retries=2,
    )
    keeper = LeaseKeeper("attempt-uuid", task, expected_output_tokens=10_000)
    keeper.progress = 50
    with caplog.at_level(logging.INFO, logger="openclaw.agents"):
        keeper.log_if_slow()
        assert caplog.records == []  # not yet half of its timeout
        keeper.started = time.monotonic() - 91
        keeper.log_if_slow()
        keeper.log_if_slow()
    assert [r.getMessage() for r in caplog.records] == [
        "CODEGEN Running task_2 (91s elapsed, 65.0K tokens, 1/2 retries) "
        "execution=exec_demo_1_abc attempt=attempt-uuid"
    ]


@pytest.mark.django_db
def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.OPENCLAW_METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200 and b"worker_pool_queue_length" in response.content


@pytest.mark.django_db
def test_metrics_without_a_token_answer_loopback_only_and_not_through_a_proxy(client, settings):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    proxied = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 403
    settings.OPENCLAW_METRICS_ALLOW = ["10.0.0.0/8", "192.168.1.5"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def execution_with_attempt(acme, created_days_ago: float, seconds: float, model="qwen"):
    created = timezone.now() - timedelta(days=created_days_ago)
    execution = finished_execution(acme, seconds)
    Execution.objects.filter(pk=execution.pk).update(created_at=created)
    task = Task.objects.create(
        execution=execution, key="a", pool="codegen", description="a", status="succeeded"
    )
    for number in (1, 2):
        Attempt.objects.create(
            task=task,
            number=number,
            status="succeeded",
            model=model,
            started_at=created,
            finished_at=created + timedelta(seconds=seconds),
            lease_expires_at=created,
            deadline_at=created,
        )
    return execution


@pytest.mark.django_db
def test_settled_executions_are_counted_once_and_not_read_again(client, settings):
    """An execution older than OPENCLAW_METRICS_SETTLE_SEC is folded into the running totals by
    one scrape; later scrapes add only the younger ones, so their cost does not grow with history."""
    settings.OPENCLAW_METRICS_SETTLE_SEC = 3600
    acme = Client.objects.create(name="acme")
    old = execution_with_attempt(acme, created_days_ago=30, seconds=20)
    execution_with_attempt(acme, created_days_ago=0, seconds=20)
    ok = {"pool": "codegen", "model": "qwen", "outcome": "succeeded"}
    run = {"status": "completed", "mode": "parallel"}
    for _ in range(2):  # the second scrape counts the folded execution once, not twice
        m = scrape(client)
        assert m["parallel_execution_task_duration_seconds_count", ok] == 4
        assert m["parallel_execution_duration_seconds_count", run] == 2
        assert m["parallel_execution_task_retries_total", {"pool": "codegen", "model": "qwen"}] == 2

    Attempt.objects.filter(task__execution=old).update(model="renamed")  # not read again
    m = scrape(client)
    assert m["parallel_execution_task_duration_seconds_count", ok] == 4
    assert ("parallel_execution_task_duration_seconds_count", (("model", "renamed"),)) not in m


@pytest.mark.django_db
def test_a_lost_cache_is_folded_again_a_batch_per_scrape(client, settings, monkeypatch):
    """No scrape reads the whole history: after the totals are lost, each scrape folds at most
    FOLD_BATCH settled executions, and the totals reach the true counts after a few scrapes."""
    from django.core.cache import cache

    from openclaw_site import metrics

    monkeypatch.setattr(metrics, "FOLD_BATCH", 2)
    settings.OPENCLAW_METRICS_SETTLE_SEC = 3600
    acme = Client.objects.create(name="acme")
    for days in (50, 40, 30, 20, 10):
        execution_with_attempt(acme, created_days_ago=days, seconds=20)
    cache.delete(metrics.ROLLUP_KEY)
    run = {"status": "completed", "mode": "parallel"}
    key = ("parallel_execution_duration_seconds_count", tuple(sorted(run.items())))
    seen = [dict.get(scrape(client), key, 0) for _ in range(4)]
    assert seen == [2, 4, 5, 5]


@pytest.mark.django_db
def test_a_scrape_runs_the_same_queries_however_many_rows(client, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.OPENCLAW_METRICS_SETTLE_SEC = 3600
    acme = Client.objects.create(name="acme")
    WorkerPool.objects.create(name="codegen", max_concurrent=3)
    counts = []
    for rows in (1, 10):
        for i in range(rows):
            execution_with_attempt(acme, created_days_ago=i % 3, seconds=5 + i)
        scrape(client)  # folds what settled
        with CaptureQueriesContext(connection) as queries:
            scrape(client)
        counts.append(len(queries))
    assert counts[0] == counts[1]
