"""Running one task attempt: context from dependencies, the model call, the reply contract.

The worker holds a lease on the attempt and renews it while the model works; the reaper expires
attempts whose lease lapses. The result is recorded with compare-and-set, so a late or duplicate
worker changes nothing.
"""

import logging
import os
import socket
import threading
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Q

from pools import llm
from pools.models import WorkerPool
from pools.prompts import AGENT_SYSTEM, GENERIC_AGENT_SYSTEM, agent_prompt
from pools.replies import ReplyError, parse_agent_reply
from pools.verification import OutputBroken, verify_output

from . import events
from .attempts import attempt_fail, attempt_renew, attempt_succeed, task_start
from .models import Task
from .states import ATTEMPT_COUNTED_FAILURES, SUPERSEDING_KINDS, TaskKind, TaskStatus

log = logging.getLogger("openclaw.agents")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
DEFAULT_OUTPUT_TOKENS = 1500  # a pool that no longer exists: a plausible size for progress


def task_role(task: Task, pool: WorkerPool | None) -> str:
    """What the task's agent does: the role its pool had when it was created, else the pool's now."""
    return task.role or (pool.role if pool else "")


# A running attempt past this share of its timeout is logged once as slow (the seed's ⚠️ line).
SLOW_TASK_FRACTION = 0.5


class LeaseKeeper(threading.Thread):
    """Renews the attempt's lease every few seconds, stores the latest progress, and logs the
    attempt once as slow when it runs past half its timeout."""

    def __init__(self, attempt_id, task: Task, expected_output_tokens: int):
        super().__init__(name=f"lease-{attempt_id}", daemon=True)
        self.attempt_id = attempt_id
        self.task = task
        self.expected_output_tokens = expected_output_tokens
        self.started = time.monotonic()
        self.progress = 0
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.slow_logged = False

    def report(self, fraction: float) -> None:
        self.progress = max(self.progress, min(99, int(fraction * 100)))

    def run(self) -> None:
        published = -1
        task = self.task
        try:
            while not self.stopped.wait(settings.OPENCLAW_LEASE_RENEW_SEC):
                try:
                    renewed = attempt_renew(
                        self.attempt_id, lease_sec=settings.OPENCLAW_LEASE_SEC, progress=self.progress
                    )
                except DatabaseError as exc:
                    # A dropped connection: reconnect on the next beat; the lease outlives a few misses.
                    log.warning("lease renewal of %s failed (%s); reconnecting", self.attempt_id, exc)
                    connection.close()
                    continue
                if not renewed:
                    self.lost.set()  # cancelled or expired: nobody wants this result any more
                    return
                if self.progress != published:
                    published = self.progress
                    events.publish_ephemeral(
                        task.execution_id,
                        {"execution_id": task.execution_id, "task": task.key, "progress": self.progress},
                    )
                self.log_if_slow()
        finally:
            connection.close()

    def log_if_slow(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.slow_logged or elapsed < SLOW_TASK_FRACTION * self.task.timeout_sec:
            return
        self.slow_logged = True
        # Tokens billed by earlier attempts, plus this attempt's output so far as streamed.
        tokens = (
            self.task.tokens_in + self.task.tokens_out + self.progress / 100 * self.expected_output_tokens
        )
        log.warning(
            "%s Running %s (%.0fs elapsed, %.1fK tokens, %d/%d retries) execution=%s attempt=%s",
            self.task.pool.upper(),
            self.task.key,
            elapsed,
            tokens / 1000,
            self.task.failed_attempts,
            self.task.max_retries,
            self.task.execution_id,
            self.attempt_id,
        )


def dependency_results(task: Task) -> list[dict]:
    """Results of the task's hard dependencies, and of soft ones that happen to be done.

    A dependency is read as its lineage's latest version: the original task's files overlaid with
    those of its succeeded remediations and revisions, so dependents use the fixed code and the
    revised schema. A soft dependency whose revision is still running is not ready (its current
    version was rejected); hard dependents were made to wait for the revision.
    """
    wanted = set(task.blocked_by) | set(task.soft_deps)
    if not wanted:
        return []
    # The dependencies, their originals and their originals' remediations and revisions; not every
    # result of the execution.
    others = Task.objects.filter(execution_id=task.execution_id).exclude(pk=task.pk)
    rows = list(others.filter(key__in=wanted))
    roots = {dep.parent_id if dep.kind in SUPERSEDING_KINDS and dep.parent_id else dep.pk for dep in rows}
    rows += others.filter(Q(pk__in=roots) | Q(parent_id__in=roots, kind__in=SUPERSEDING_KINDS)).exclude(
        pk__in=[dep.pk for dep in rows]
    )
    by_key = {t.key: t for t in rows}
    by_pk = {t.pk: t for t in rows}
    roots: dict[str, Task] = {}
    hard: set[str] = set()
    for key in sorted(wanted):
        dep = by_key.get(key)
        if dep is None:
            continue
        root = by_pk.get(dep.parent_id, dep) if dep.kind in SUPERSEDING_KINDS else dep
        roots.setdefault(root.key, root)
        if key in task.blocked_by:
            hard.add(root.key)
    results = []
    for root in roots.values():
        lineage = [root] + [t for t in rows if t.parent_id == root.pk and t.kind in SUPERSEDING_KINDS]
        if root.key not in hard and any(t.kind == TaskKind.REVISION and not t.is_terminal for t in lineage):
            continue
        done = sorted(
            (t for t in lineage if t.status == TaskStatus.SUCCEEDED), key=lambda t: (t.finished_at, t.pk)
        )
        if not done:
            continue
        files: dict[str, str] = {}
        for version in done:
            files.update((f["path"], f["content"]) for f in version.result.get("files", []))
        latest = done[-1]
        results.append(
            {
                "key": root.key,
                "source": latest.key,
                "pool": root.pool,
                "role": root.role,
                "hard": root.key in hard,
                "summary": latest.result.get("summary", ""),
                "findings": latest.result.get("findings", []),
                "files": [{"path": path, "content": content} for path, content in files.items()],
            }
        )
    return results


def previous_failure(task: Task, attempt_number: int) -> str:
    """Why the task's last attempt failed, so a retry can avoid the same mistake."""
    if attempt_number <= 1:
        return ""
    last = (
        task.attempts.filter(number__lt=attempt_number, status__in=ATTEMPT_COUNTED_FAILURES)
        .order_by("-number")
        .first()
    )
    return last.error if last else ""


def task_run(task_id: int, dispatch_no: int) -> None:
    """The whole attempt, as the pool actor's body."""
    attempt = task_start(task_id, dispatch_no, WORKER_ID, lease_sec=settings.OPENCLAW_LEASE_SEC)
    if attempt is None:
        return  # duplicate or stale message
    task = attempt.task  # loaded by task_start, with its execution
    keeper = LeaseKeeper(attempt.pk, task, DEFAULT_OUTPUT_TOKENS)
    keeper.start()
    usage: dict = {}  # (spec, completion so far): tokens are billed whatever the outcome
    started = time.monotonic()
    try:
        pool = WorkerPool.objects.select_related("model").filter(name=task.pool).first()
        if pool is not None:
            keeper.expected_output_tokens = pool.expected_output_tokens
        spec = llm.resolve(pool.model if pool else None)
        deps = dependency_results(task)
        reply = call_agent(task, attempt.number, spec, pool, started + task.timeout_sec, keeper, usage, deps)
        result = verify_output(task_role(task, pool), reply, deps)
        result["inputs"] = [
            {
                "key": d["key"],
                "source": d["source"],
                "pool": d["pool"],
                "role": d["role"],
                "paths": [f["path"] for f in d["files"]],
            }
            for d in deps
        ]
        spent = usage["completion"].input_tokens + usage["completion"].output_tokens
        log.info(
            "%s Completed %s (%.0fs, %.1fK tokens) execution=%s attempt=%s",
            task.pool.upper(),
            task.key,
            time.monotonic() - started,
            spent / 1000,
            task.execution_id,
            attempt.pk,
        )
        record(attempt_succeed, attempt.pk, result=result, usage=billed(usage))
    except llm.LLMError as exc:
        record(attempt_fail, attempt.pk, f"{type(exc).__name__}: {exc}", usage=billed(usage))
    except ReplyError as exc:
        record(attempt_fail, attempt.pk, f"malformed reply: {exc}", usage=billed(usage))
    except OutputBroken as exc:
        record(attempt_fail, attempt.pk, f"verification failed: {exc}", usage=billed(usage))
    except Exception as exc:
        log.exception("attempt %s of %s crashed", attempt.pk, task)
        record(attempt_fail, attempt.pk, f"internal error: {type(exc).__name__}: {exc}", usage=billed(usage))
    finally:
        keeper.stopped.set()


def record(transition, *args, **kwargs) -> None:
    """Record an attempt's outcome, reconnecting once if the database connection dropped meanwhile.

    The transitions are compare-and-set, so a second try after a lost commit acknowledgement is
    harmless. If the database stays away, the lease lapses and the reaper retries the task.
    """
    try:
        transition(*args, **kwargs)
    except (OperationalError, InterfaceError) as exc:
        log.warning("recording %s failed (%s); reconnecting once", transition.__name__, exc)
        connection.close()
        transition(*args, **kwargs)


def billed(usage: dict) -> tuple | None:
    return (usage["spec"], usage["completion"]) if usage else None


def call_agent(
    task: Task,
    attempt_number: int,
    spec: llm.ModelSpec,
    pool: WorkerPool | None,
    deadline: float,
    keeper: LeaseKeeper,
    usage: dict,
    deps: list[dict],
) -> dict:
    """Ask the pool's model, parse the reply; one repair request on a malformed reply."""
    base = {"key": task.key, "pool": task.pool, "description": task.description, "context": task.context}
    failure = previous_failure(task, attempt_number)
    meta = {
        "request": task.execution.message,
        "description": task.description,
        "kind": task.kind,
        "attempt": attempt_number,
        "dependencies": deps,
        "pool_latency_sec": pool.offline_latency_sec if pool else 1.0,
        "target_files": task.context.get("target_files", []),
        "findings": task.context.get("findings", []),
        "round": task.context.get("round", 0),
    }
    role = task_role(task, pool)
    system = AGENT_SYSTEM.get(role, GENERIC_AGENT_SYSTEM)
    repair = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise llm.LLMTimeout(f"no valid reply within {task.timeout_sec}s")
        completion = llm.complete(
            spec,
            llm.LLMRequest(
                purpose="agent",
                system=system,
                prompt=agent_prompt(
                    request=task.execution.message,
                    task=base,
                    dependencies=deps,
                    repair_errors=repair,
                    previous_failure=failure,
                ),
                timeout=remaining,
                pool=task.pool,
                role=role,
                max_tokens=spec.max_output_tokens,
                expected_output_tokens=pool.expected_output_tokens if pool else DEFAULT_OUTPUT_TOKENS,
                meta={**meta, "repair": bool(repair)},
            ),
            on_progress=keeper.report,
        )
        usage["spec"] = spec
        usage["completion"] = (
            merge_usage(usage["completion"], completion) if "completion" in usage else completion
        )
        try:
            return parse_agent_reply(completion.text).as_dict()
        except ReplyError as exc:
            if repair:
                raise
            repair = str(exc)


def merge_usage(a: llm.Completion, b: llm.Completion) -> llm.Completion:
    return llm.Completion(
        text=b.text,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        model=b.model,
        provider=b.provider,
    )
