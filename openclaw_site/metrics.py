"""`GET /metrics` in Prometheus text format, computed from the database at scrape time.

Why not counters incremented in each process: the work happens in many worker processes on many
hosts (and they restart), so per-process counters need a multiprocess directory per host and still
disagree between daphne replicas. The database already holds every attempt, conflict and ledger
entry, so a custom Collector aggregates them when Prometheus scrapes: exact across processes and
hosts, identical on every web replica, a handful of indexed GROUP BY queries per scrape.
Histograms are cumulative over all history, as Prometheus expects; use `rate()`/`increase()` on
them as on any counter.
"""

from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from executions.models import Attempt, Conflict, Execution, LedgerEntry, Task
from executions.states import EXECUTION_TERMINAL, TaskStatus
from pools.models import WorkerPool

EXECUTION_BUCKETS = (5, 10, 30, 60, 90, 120, 150, 180, 210, 240, 300, 450, 600, 900, 1800, 3600)
TASK_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
WAITING = [TaskStatus.READY, TaskStatus.QUEUED]
TOKEN_FIELDS = {
    "input": "tokens_in",
    "output": "tokens_out",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
}


def _duration():
    return ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())


def _histogram_rows(queryset, labels: list[str], buckets) -> list[tuple[dict, list[tuple[str, int]], float]]:
    """GROUP BY `labels`, counting rows at or under each bucket bound in the same query."""
    bounds = {
        f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)
    }
    rows = (
        queryset.alias(duration=_duration())
        .values(*labels)
        .annotate(n=Count("pk"), total=Sum("duration"), **bounds)
        .order_by(*labels)
    )
    result = []
    for row in rows:
        cumulative = [(_bound(b), row[f"le_{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["n"])]
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6
        result.append(({k: str(row[k] or "unknown") for k in labels}, cumulative, seconds))
    return result


def _bound(value: float) -> str:
    return str(float(value))


class DatabaseCollector:
    """Every metric of the seed's Monitoring section (and per-pool task metrics), from the database."""

    def collect(self):
        yield from self.execution_metrics()
        yield from self.pool_metrics()
        yield from self.task_metrics()
        yield from self.usage_metrics()
        yield from self.conflict_metrics()

    def execution_metrics(self):
        duration = HistogramMetricFamily(
            "parallel_execution_duration_seconds",
            "Wall-clock duration of finished executions",
            labels=["status", "mode"],
        )
        finished = Execution.objects.filter(
            status__in=EXECUTION_TERMINAL, started_at__isnull=False, finished_at__isnull=False
        )
        for labels, buckets, total in _histogram_rows(finished, ["status", "mode"], EXECUTION_BUCKETS):
            duration.add_metric([labels["status"], labels["mode"]], buckets, total)
        yield duration
        current = GaugeMetricFamily("parallel_executions", "Executions by current status", labels=["status"])
        for status, n in Execution.objects.values_list("status").annotate(n=Count("pk")).order_by("status"):
            current.add_metric([status], n)
        yield current

    def pool_metrics(self):
        queue = GaugeMetricFamily(
            "worker_pool_queue_length",
            "Tasks waiting for a slot or a worker (ready + queued)",
            labels=["pool"],
        )
        running = GaugeMetricFamily("worker_pool_running", "Tasks running now", labels=["pool"])
        limit = GaugeMetricFamily(
            "worker_pool_max_concurrent", "The pool's concurrency limit", labels=["pool"]
        )
        counts = {
            (pool, status): n
            for pool, status, n in Task.objects.filter(status__in=WAITING + [TaskStatus.RUNNING])
            .values_list("pool", "status")
            .annotate(n=Count("pk"))
            .order_by()
        }
        for pool in WorkerPool.objects.order_by("name"):
            queue.add_metric([pool.name], sum(counts.get((pool.name, s), 0) for s in WAITING))
            running.add_metric([pool.name], counts.get((pool.name, TaskStatus.RUNNING), 0))
            limit.add_metric([pool.name], pool.max_concurrent)
        yield from (queue, running, limit)

    def task_metrics(self):
        duration = HistogramMetricFamily(
            "parallel_execution_task_duration_seconds",
            "Duration of finished task attempts",
            labels=["pool", "model", "outcome"],
        )
        finished = Attempt.objects.filter(finished_at__isnull=False).annotate(
            pool=F("task__pool"), outcome=F("status")
        )
        for labels, buckets, total in _histogram_rows(finished, ["pool", "model", "outcome"], TASK_BUCKETS):
            duration.add_metric([labels["pool"], labels["model"], labels["outcome"]], buckets, total)
        yield duration
        retries = CounterMetricFamily(
            "parallel_execution_task_retries", "Task attempts after the first", labels=["pool", "model"]
        )
        for pool, model, n in (
            Attempt.objects.filter(number__gt=1)
            .values_list("task__pool", "model")
            .annotate(n=Count("pk"))
            .order_by("task__pool", "model")
        ):
            retries.add_metric([pool, model or "unknown"], n)
        yield retries
        tasks = GaugeMetricFamily(
            "parallel_execution_tasks",
            "Tasks by pool and current status (dead, blocked, …)",
            labels=["pool", "status"],
        )
        for pool, status, n in (
            Task.objects.values_list("pool", "status").annotate(n=Count("pk")).order_by("pool", "status")
        ):
            tasks.add_metric([pool, status], n)
        yield tasks

    def usage_metrics(self):
        tokens = CounterMetricFamily(
            "parallel_execution_tokens", "Model tokens billed", labels=["pool", "model", "kind"]
        )
        cost = CounterMetricFamily(
            "parallel_execution_cost_usd", "Model usage cost in USD", labels=["pool", "model"]
        )
        sums = {f"sum_{kind}": Sum(field) for kind, field in TOKEN_FIELDS.items()}
        for row in (
            LedgerEntry.objects.filter(kind="usage")
            .values("pool", "model")
            .annotate(usd=Sum("amount_usd"), **sums)
            .order_by("pool", "model")
        ):
            pool, model = row["pool"] or "unknown", row["model"] or "unknown"
            for kind in TOKEN_FIELDS:
                tokens.add_metric([pool, model, kind], row[f"sum_{kind}"] or 0)
            cost.add_metric([pool, model], float(row["usd"] or 0))
        yield from (tokens, cost)

    def conflict_metrics(self):
        detected = CounterMetricFamily(
            "parallel_execution_conflicts", "Conflicts detected by the aggregator", labels=["kind"]
        )
        resolved = CounterMetricFamily(
            "parallel_execution_conflicts_resolved", "Conflicts resolved", labels=["kind"]
        )
        for kind, n, done in (
            Conflict.objects.values_list("kind")
            .annotate(n=Count("pk"), done=Count("pk", filter=Q(status="resolved")))
            .order_by("kind")
        ):
            detected.add_metric([kind], n)
            resolved.add_metric([kind], done)
        yield from (detected, resolved)


registry = CollectorRegistry(auto_describe=False)
registry.register(DatabaseCollector())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
