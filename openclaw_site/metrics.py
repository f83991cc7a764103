"""`GET /metrics` in Prometheus text format, computed from the database at scrape time.

Why not counters incremented in each process: the work happens in many worker processes on many
hosts (and they restart), so per-process counters need a multiprocess directory per host and still
disagree between daphne replicas. The database already holds every attempt, conflict and ledger
entry, so a custom Collector aggregates them when Prometheus scrapes: exact across processes and
hosts, identical on every web replica.

What a scrape reads does not grow with history. Gauges read live rows only (non-terminal
executions and their tasks, waiting and running tasks). Counters and histograms are running totals
kept in the cache (Redis, shared by the replicas): an execution's rows are folded in once the
execution is OPENCLAW_METRICS_SETTLE_SEC old and never read again, and each scrape adds the rows of
the executions younger than that, found through the index on `Execution.created_at`. Histograms are
cumulative, as Prometheus expects; use `rate()`/`increase()` on them as on any counter. After the
cache is lost (a Redis flush) the totals are folded again, FOLD_BATCH executions per scrape.
"""

import hmac
import ipaddress
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
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
LIVE_EXECUTION = [s for s in Execution._meta.get_field("status").choices if s[0] not in EXECUTION_TERMINAL]
TOKEN_FIELDS = {
    "input": "tokens_in",
    "output": "tokens_out",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
}
ROLLUP_KEY = "metrics:rollup:v1"  # (watermark, totals): executions created up to watermark
FOLD_LOCK_KEY = "metrics:rollup:fold"
FOLD_BATCH = 2000  # settled executions folded into the totals per scrape, at most

Totals = dict[str, dict[tuple, list[float]]]  # metric → labels → numbers, added element by element


def _duration():
    return ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())


def _seconds(total) -> float:
    return total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6


def _histogram(queryset, labels: list[str], buckets) -> dict[tuple, list[float]]:
    """GROUP BY `labels`: [rows at or under each bucket bound…, rows, sum of seconds], one query."""
    bounds = {
        f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)
    }
    rows = (
        queryset.alias(duration=_duration())
        .values(*labels)
        .annotate(n=Count("pk"), total=Sum("duration"), **bounds)
        .order_by()
    )
    return {
        tuple(str(row[k] or "unknown") for k in labels): [
            *(row[f"le_{i}"] for i in range(len(buckets))),
            row["n"],
            _seconds(row["total"]),
        ]
        for row in rows
    }


def _executions_created(after, until):
    """The ids of the executions created in (after, until]; either end may be open (None). Every
    query below filters on them as a subquery, so the database starts from the index on
    `created_at` and reaches the other rows through their execution's and task's indexes."""
    q = Q()
    if after is not None:
        q &= Q(created_at__gt=after)
    if until is not None:
        q &= Q(created_at__lte=until)
    return Execution.objects.filter(q).values("pk")


def cumulative_totals(after=None, until=None) -> Totals:
    """Every counter and histogram over the executions created in (after, until]."""
    ids = _executions_created(after, until)
    # Finished ones only, picked out after the GROUP BY: a status filter in SQL leads the
    # database to the status index, which holds nearly every execution (the terminal ones).
    executions = Execution.objects.filter(pk__in=ids, started_at__isnull=False, finished_at__isnull=False)
    attempts = Attempt.objects.filter(task__execution_id__in=ids)
    finished = attempts.filter(finished_at__isnull=False).annotate(pool=F("task__pool"), outcome=F("status"))
    retries = (
        attempts.filter(number__gt=1).values_list("task__pool", "model").annotate(n=Count("pk")).order_by()
    )
    sums = {f"sum_{kind}": Sum(field) for kind, field in TOKEN_FIELDS.items()}
    usage = (
        LedgerEntry.objects.filter(execution_id__in=ids, kind="usage")
        .values("pool", "model")
        .annotate(usd=Sum("amount_usd"), **sums)
        .order_by()
    )
    conflicts = (
        Conflict.objects.filter(execution_id__in=ids)
        .values_list("kind")
        .annotate(n=Count("pk"), done=Count("pk", filter=Q(status="resolved")))
        .order_by()
    )
    return {
        "execution_duration": {
            labels: values
            for labels, values in _histogram(executions, ["status", "mode"], EXECUTION_BUCKETS).items()
            if labels[0] in EXECUTION_TERMINAL
        },
        "task_duration": _histogram(finished, ["pool", "model", "outcome"], TASK_BUCKETS),
        "retries": {(pool or "unknown", model or "unknown"): [n] for pool, model, n in retries},
        "usage": {
            (row["pool"] or "unknown", row["model"] or "unknown"): [
                *(row[f"sum_{kind}"] or 0 for kind in TOKEN_FIELDS),
                float(row["usd"] or 0),
            ]
            for row in usage
        },
        "conflicts": {(kind,): [n, done] for kind, n, done in conflicts},
    }


def add_totals(into: Totals, more: Totals) -> Totals:
    for metric, rows in more.items():
        target = into.setdefault(metric, {})
        for labels, values in rows.items():
            have = target.get(labels)
            target[labels] = values if have is None else [a + b for a, b in zip(have, values)]
    return into


def current_totals() -> Totals:
    """The running totals brought up to date, plus the executions too young to fold.

    Each scrape folds at most FOLD_BATCH settled executions, so no scrape reads the whole history,
    even the first one after the cache was lost: the totals then catch up over a few scrapes
    (counting only the young executions meanwhile)."""
    cutoff = timezone.now() - timedelta(seconds=settings.OPENCLAW_METRICS_SETTLE_SEC)
    watermark, totals = cache.get(ROLLUP_KEY) or (None, {})
    if (watermark is None or watermark < cutoff) and cache.add(FOLD_LOCK_KEY, 1, timeout=600):
        try:
            until = _fold_until(watermark, cutoff)
            totals = add_totals(totals, cumulative_totals(watermark, until))
            watermark = until
            cache.set(ROLLUP_KEY, (watermark, totals), timeout=None)
        finally:
            cache.delete(FOLD_LOCK_KEY)
    young_from = watermark if watermark is not None and watermark >= cutoff else cutoff
    return add_totals({m: dict(rows) for m, rows in totals.items()}, cumulative_totals(young_from, None))


def _fold_until(watermark, cutoff):
    """Where this scrape's fold stops: after FOLD_BATCH executions past the watermark, or at the cutoff."""
    settled = Execution.objects.filter(created_at__lte=cutoff)
    if watermark is not None:
        settled = settled.filter(created_at__gt=watermark)
    batch_end = settled.order_by("created_at").values_list("created_at", flat=True)[
        FOLD_BATCH - 1 : FOLD_BATCH
    ]
    return next(iter(batch_end), cutoff)


def _bound(value: float) -> str:
    return str(float(value))


def _histogram_family(family: HistogramMetricFamily, rows: dict[tuple, list[float]], buckets):
    for labels, values in sorted(rows.items()):
        cumulative = [(_bound(b), values[i]) for i, b in enumerate(buckets)] + [("+Inf", values[-2])]
        family.add_metric(list(labels), cumulative, values[-1])
    return family


class DatabaseCollector:
    """Every metric of the seed's Monitoring section (and per-pool task metrics), from the database."""

    def collect(self):
        totals = current_totals()
        yield from self.execution_metrics(totals)
        yield from self.pool_metrics()
        yield from self.task_metrics(totals)
        yield from self.usage_metrics(totals)
        yield from self.conflict_metrics(totals)

    def execution_metrics(self, totals: Totals):
        yield _histogram_family(
            HistogramMetricFamily(
                "parallel_execution_duration_seconds",
                "Wall-clock duration of finished executions",
                labels=["status", "mode"],
            ),
            totals.get("execution_duration", {}),
            EXECUTION_BUCKETS,
        )
        current = GaugeMetricFamily(
            "parallel_executions", "Executions in progress by status", labels=["status"]
        )
        live = dict(
            Execution.objects.filter(status__in=[s for s, _ in LIVE_EXECUTION])
            .values_list("status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for status, _ in LIVE_EXECUTION:
            current.add_metric([status], live.get(status, 0))
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
        pools = list(WorkerPool.objects.order_by("name"))
        counts = {
            (pool, status): n
            for pool, status, n in Task.objects.filter(
                pool__in=[p.name for p in pools], status__in=WAITING + [TaskStatus.RUNNING]
            )
            .values_list("pool", "status")
            .annotate(n=Count("pk"))
            .order_by()
        }
        for pool in pools:
            queue.add_metric([pool.name], sum(counts.get((pool.name, s), 0) for s in WAITING))
            running.add_metric([pool.name], counts.get((pool.name, TaskStatus.RUNNING), 0))
            limit.add_metric([pool.name], pool.max_concurrent)
        yield from (queue, running, limit)

    def task_metrics(self, totals: Totals):
        yield _histogram_family(
            HistogramMetricFamily(
                "parallel_execution_task_duration_seconds",
                "Duration of finished task attempts",
                labels=["pool", "model", "outcome"],
            ),
            totals.get("task_duration", {}),
            TASK_BUCKETS,
        )
        retries = CounterMetricFamily(
            "parallel_execution_task_retries", "Task attempts after the first", labels=["pool", "model"]
        )
        for labels, (n,) in sorted(totals.get("retries", {}).items()):
            retries.add_metric(list(labels), n)
        yield retries
        tasks = GaugeMetricFamily(
            "parallel_execution_tasks",
            "Tasks of the executions in progress, by pool and status (dead, blocked, …)",
            labels=["pool", "status"],
        )
        for pool, status, n in (
            Task.objects.filter(execution__status__in=[s for s, _ in LIVE_EXECUTION])
            .values_list("pool", "status")
            .annotate(n=Count("pk"))
            .order_by("pool", "status")
        ):
            tasks.add_metric([pool, status], n)
        yield tasks

    def usage_metrics(self, totals: Totals):
        tokens = CounterMetricFamily(
            "parallel_execution_tokens", "Model tokens billed", labels=["pool", "model", "kind"]
        )
        cost = CounterMetricFamily(
            "parallel_execution_cost_usd", "Model usage cost in USD", labels=["pool", "model"]
        )
        for (pool, model), values in sorted(totals.get("usage", {}).items()):
            for kind, value in zip(TOKEN_FIELDS, values):
                tokens.add_metric([pool, model, kind], value)
            cost.add_metric([pool, model], values[-1])
        yield from (tokens, cost)

    def conflict_metrics(self, totals: Totals):
        detected = CounterMetricFamily(
            "parallel_execution_conflicts", "Conflicts detected by the aggregator", labels=["kind"]
        )
        resolved = CounterMetricFamily(
            "parallel_execution_conflicts_resolved", "Conflicts resolved", labels=["kind"]
        )
        for (kind,), (n, done) in sorted(totals.get("conflicts", {}).items()):
            detected.add_metric([kind], n)
            resolved.add_metric([kind], done)
        yield from (detected, resolved)


registry = CollectorRegistry(auto_describe=False)
registry.register(DatabaseCollector())


def _client_allowed(request: HttpRequest) -> bool:
    """OPENCLAW_METRICS_ALLOW, or by default: any address with a token, else loopback not proxied
    (behind a proxy on this host every client would otherwise look local)."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if settings.OPENCLAW_METRICS_ALLOW:
        return any(
            address in ipaddress.ip_network(entry.strip(), strict=False)
            for entry in settings.OPENCLAW_METRICS_ALLOW
            if entry.strip()
        )
    if settings.OPENCLAW_METRICS_TOKEN:
        return True
    proxied = any(
        h in request.META
        for h in ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
    )
    return address.is_loopback and not proxied


def _token_ok(request: HttpRequest) -> bool:
    token = settings.OPENCLAW_METRICS_TOKEN
    if not token:
        return True
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _client_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    if not _token_ok(request):
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
