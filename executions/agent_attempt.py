"""Running one task attempt: context from dependencies, the agent's tool loop (or a single reply),
the reply contract, verification.

The worker holds a lease on the attempt and renews it while the agent works; the reaper expires
attempts whose lease lapses. Every model call is billed once under `usage:<attempt>:<turn>`: a turn
the loop goes on from is billed as soon as its call returns, the last one with the attempt's
outcome. The result is recorded with compare-and-set, so a late or duplicate worker changes nothing.
"""

import logging
import os
import queue
import threading
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Q

from pools import llm
from pools.agent_loop import TRANSCRIPT_CHARS, Hooks, LoopStopped, Turn, TurnsExhausted, run_loop
from pools.agent_tools import Workspace
from pools.models import WorkerPool
from pools.prompts import AGENT_SYSTEM, GENERIC_AGENT_SYSTEM, agent_prompt, loop_prompt
from pools.replies import ReplyError, parse_agent_reply
from pools.verification import OutputBroken, verify_output

from . import billing, events, messages, projects, sql
from .attempts import (
    Continuation,
    attempt_fail,
    attempt_renew,
    attempt_stop_for_budget,
    attempt_succeed,
    task_start,
)
from .models import Attempt, Task
from .states import (
    ATTEMPT_COUNTED_FAILURES,
    SUPERSEDING_KINDS,
    AttemptStatus,
    StopReason,
    TaskKind,
    TaskStatus,
)
from .worker_identity import WORKER_ID
from .worker_queues import consumed_pools

log = logging.getLogger("openclaw.agents")

DEFAULT_OUTPUT_TOKENS = 1500  # a pool that no longer exists: a plausible size for progress


def task_role(task: Task, pool: WorkerPool | None) -> str:
    """What the task's agent does: the role its pool had when it was created, else the pool's now."""
    return task.role or (pool.role if pool else "")


# A running attempt past this share of its timeout is logged once as slow (the seed's ⚠️ line).
SLOW_TASK_FRACTION = 0.5


class KeeperThreads:
    """Daemon threads that run the lease keepers, each kept for the next keeper once its attempt
    ends. Starting a thread waits until the new thread runs, which takes milliseconds when the
    process's other threads are busy, and every attempt's start would wait for it."""

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's threads are not in a child

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a job that no submit has counted on yet

    def submit(self, job) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
            self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._serve, name="lease-keeper", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:
                log.exception("lease keeper crashed")
            with self._lock:
                self._idle += 1


keeper_threads = KeeperThreads()


class LeaseKeeper:
    """Renews the attempt's lease every few seconds, stores the latest progress, and logs the
    attempt once as slow when it runs past half its timeout. `start` runs it on a kept thread."""

    def __init__(self, attempt_id, task: Task, expected_output_tokens: int):
        self.attempt_id = attempt_id
        self.task = task
        self.expected_output_tokens = expected_output_tokens
        self.started = time.monotonic()
        self.progress = 0
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.slow_logged = False

    def start(self) -> None:
        keeper_threads.submit(self.run)

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


# The pool an attempt runs in, read again for each attempt: admin edits apply to the next one.
pool_with_model = sql.CompiledRead(
    lambda name: WorkerPool.objects.select_related("model").filter(name=name),
    WorkerPool._meta.get_field("name"),
)
dependencies_and_versions = sql.CompiledRead(
    lambda execution_id, task_id, keys: (
        Task.objects.filter(execution_id=execution_id)
        .exclude(pk=task_id)
        .filter(Q(key__in=keys) | Q(parent__key__in=keys, kind__in=SUPERSEDING_KINDS))
    ),
    Task._meta.get_field("execution"),
    Task._meta.pk,
    Task._meta.get_field("key"),
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
    # result of the execution. One query when the dependencies are originals (the usual case): they
    # and their remediations and revisions.
    rows = dependencies_and_versions.all(task.execution_id, task.pk, sorted(wanted))
    originals = {
        dep.parent_id for dep in rows if dep.key in wanted and dep.kind in SUPERSEDING_KINDS and dep.parent_id
    }
    if originals:  # a dependency on a remediation or revision itself: its original and the others
        rows += (
            Task.objects.filter(execution_id=task.execution_id)
            .filter(Q(pk__in=originals) | Q(parent_id__in=originals, kind__in=SUPERSEDING_KINDS))
            .exclude(pk__in=[task.pk] + [dep.pk for dep in rows])
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
            for path in version.result.get("removed", []):
                files.pop(path, None)
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
                "commit": latest.commit,
                "files": [{"path": path, "content": content} for path, content in files.items()],
            }
        )
    return results


def lineage_root(task: Task) -> tuple[str, str]:
    """The key and description of the original task a remediation or revision replaces (the task's
    own otherwise): the contract's ownership and the offline agents' templates go by it."""
    if task.kind in SUPERSEDING_KINDS and task.parent_id:
        row = Task.objects.filter(pk=task.parent_id).values_list("key", "description").first()
        if row:
            return row
    return task.key, task.description


def contract_of(task: Task) -> tuple[dict, list[str] | None]:
    """The execution's contract and the path prefixes the task's lineage owns (None: unrestricted)."""
    contract = task.execution.contract or {}
    owned = contract.get("ownership", {}).get(lineage_root(task)[0])
    return contract, owned


def task_for_prompt(task: Task) -> dict:
    contract, owned = contract_of(task)
    return {
        "key": task.key,
        "pool": task.pool,
        "description": task.description,
        "context": task.context,
        "contract": contract,
        "owned": owned,
    }


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


class TurnMeter:
    """Bills an attempt's model calls, each once: a call the attempt goes on from is recorded at once
    (with its turn of the transcript); the latest is held to go with the attempt's outcome.
    `verdict` is what the latest recording found: whether the attempt may make another call."""

    def __init__(self, attempt: Attempt, client_id: int):
        self.attempt = attempt
        self.client_id = client_id
        self.spec: llm.ModelSpec | None = None
        self.pending: billing.AttemptUsage | None = None
        self.verdict: billing.TurnVerdict | None = None
        self.calls = 0
        self.tokens = 0

    def add(self, completion: llm.Completion, transcript: dict) -> None:
        self.flush()
        self.calls += 1
        self.tokens += completion.input_tokens + completion.output_tokens
        self.pending = billing.AttemptUsage.of(self.spec, completion, self.calls, transcript)

    def flush(self) -> None:
        if self.pending is not None:
            self.verdict = record(billing.record_turn, self.attempt, self.pending, self.client_id)
            self.pending = None

    def last(self) -> billing.AttemptUsage | None:
        """The call not yet billed, handed to the transition that closes the attempt."""
        pending, self.pending = self.pending, None
        return pending


def task_run(task_id: int, dispatch_no: int) -> None:
    """The pool actor's body: the attempt of this dispatch, then each attempt its success started in
    place of a message (`attempts.Continuation`)."""
    received = time.monotonic()
    attempt = task_start(task_id, dispatch_no, WORKER_ID, lease_sec=settings.OPENCLAW_LEASE_SEC)
    while attempt is not None:  # None: a duplicate or stale message, or nothing started in place
        attempt = run_attempt(attempt, continuation(received))


def continuation(received: float) -> Continuation | None:
    """What this thread may run next in place of a message, `received` (monotonic) being when its
    message arrived: a task of a pool whose queue the process consumes, whose timeout fits in what
    is left of the message's time limit (a minute kept for recording its outcome)."""
    if not settings.OPENCLAW_RUN_READY_IN_PLACE:
        return None
    left = messages.RUN_TASK_TIME_LIMIT_MS / 1000 - (time.monotonic() - received) - 60
    return Continuation(WORKER_ID, settings.OPENCLAW_LEASE_SEC, consumed_pools(), left)


def run_attempt(attempt: Attempt, continuation: Continuation | None) -> Attempt | None:
    """One running attempt to its outcome; the attempt its success started in its place, if any."""
    task = attempt.task  # loaded with its execution
    keeper = LeaseKeeper(attempt.pk, task, DEFAULT_OUTPUT_TOKENS)
    keeper.start()
    meter = TurnMeter(attempt, task.execution.client_id)
    started = time.monotonic()
    try:
        pool = pool_with_model.first(task.pool)
        if pool is not None:
            keeper.expected_output_tokens = pool.expected_output_tokens
        spec = meter.spec = llm.resolve(pool.model if pool else None)
        deps = dependency_results(task)
        # Executions from before projects lived in git have no project: their tasks make no commits.
        start = projects.task_start(task, deps) if task.execution.project else None
        deadline = started + task.timeout_sec
        max_turns = pool.max_turns if pool else 1
        if max_turns > 1 and spec.options.get("tools", True) is not False:
            reply, loop = work_in_loop(task, attempt, spec, pool, deadline, keeper, meter, deps, start)
        else:
            reply = call_agent(task, attempt.number, spec, pool, deadline, keeper, meter, deps, start)
            loop = None
        result = verify_output(task_role(task, pool), reply, deps, start.files if start else None)
        if task.context.get("drop_paths"):
            # An ownership fix: the files outside the lineage's paths leave the merged tree.
            result["removed"] = sorted(set(task.context["drop_paths"]) - set(Task.paths_of(result)))
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
        if loop is not None:
            result["turns"] = loop.turns
            result["commands"] = [run.as_dict() for run in loop.runs]
            if loop.tests is not None:
                result["tests"] = loop.tests
        log.info(
            "%s Completed %s (%.0fs, %.1fK tokens) execution=%s attempt=%s",
            task.pool.upper(),
            task.key,
            time.monotonic() - started,
            meter.tokens / 1000,
            task.execution_id,
            attempt.pk,
        )
        commit, objects = (
            projects.commit_output(
                task,
                start,
                result.get("files", []),
                result.get("summary", ""),
                spec.model,
                result.get("removed", []),
            )
            if start is not None
            else ("", None)
        )
        recorded = record(
            attempt_succeed,
            attempt.pk,
            result=result,
            usage=meter.last(),
            commit=commit,
            objects=objects,
            continuation=continuation,
        )
        if recorded and commit:
            projects.publish_branch(task, commit)
        return recorded.next_attempt
    except LoopStopped as exc:
        if exc.reason == StopReason.BUDGET:
            record(attempt_stop_for_budget, attempt.pk, usage=meter.last())
        else:  # cancelled or expired meanwhile: closed by whoever did it; the calls made are billed
            meter.flush()
            log.info("attempt %s of %s stopped: %s", attempt.pk, task, exc)
    except TurnsExhausted as exc:
        record(attempt_fail, attempt.pk, str(exc), usage=meter.last())
    except llm.LLMError as exc:
        record(attempt_fail, attempt.pk, f"{type(exc).__name__}: {exc}", usage=meter.last())
    except ReplyError as exc:
        record(attempt_fail, attempt.pk, f"malformed reply: {exc}", usage=meter.last())
    except OutputBroken as exc:
        record(attempt_fail, attempt.pk, f"verification failed: {exc}", usage=meter.last())
    except Exception as exc:
        log.exception("attempt %s of %s crashed", attempt.pk, task)
        record(attempt_fail, attempt.pk, f"internal error: {type(exc).__name__}: {exc}", usage=meter.last())
    finally:
        keeper.stopped.set()
    return None


def work_in_loop(
    task: Task,
    attempt: Attempt,
    spec: llm.ModelSpec,
    pool: WorkerPool,
    deadline: float,
    keeper: LeaseKeeper,
    meter: TurnMeter,
    deps: list[dict],
    start: "projects.Start | None" = None,
):
    """The agent's tool loop over a workspace holding the project's tree where the task starts (its
    base with its dependencies' work merged in; without a project, its dependencies' files) and,
    for a fix, the files to fix; returns the reply and the loop's record."""
    role = task_role(task, pool)
    files: dict[str, str] = dict(start.files) if start is not None else {}
    for dep in deps if start is None else ():
        files.update((f["path"], f["content"]) for f in dep["files"])
    files.update((f["path"], f["content"]) for f in task.context.get("target_files", []) if "path" in f)
    request = llm.LLMRequest(
        purpose="agent",
        system=AGENT_SYSTEM.get(role, GENERIC_AGENT_SYSTEM),
        prompt=loop_prompt(
            request=task.execution.message,
            task=task_for_prompt(task),
            role=role,
            dependencies=deps,
            previous_failure=previous_failure(task, attempt.number),
        ),
        timeout=task.timeout_sec,
        pool=task.pool,
        role=role,
        max_tokens=spec.max_output_tokens,
        expected_output_tokens=pool.expected_output_tokens,
        meta=agent_meta(task, attempt.number, pool, deps, start),
    )

    def before_turn(number: int) -> None:
        # The first call follows the attempt's set-up: asked here. Every later one follows a turn
        # that `after_turn` billed, and the transaction that billed it answered both questions.
        if number == 1:
            running, allowed = (
                Attempt.objects.filter(pk=attempt.pk, status=AttemptStatus.RUNNING).exists(),
                True,
            )
        else:
            running, allowed = meter.verdict.running, meter.verdict.next_allowed
        if keeper.lost.is_set() or not running:
            raise LoopStopped("cancelled", "the attempt is no longer running (cancelled or expired)")
        if not allowed:
            raise LoopStopped(StopReason.BUDGET, "the execution's budget does not allow another model call")

    def after_turn(turn: Turn) -> None:
        meter.add(
            turn.completion,
            {
                "text": turn.text[:TRANSCRIPT_CHARS],
                "tool_calls": turn.tool_calls,
                "tool_results": turn.tool_results,
                "duration_sec": round(turn.duration_sec, 3),
            },
        )
        if not turn.final:
            meter.flush()  # billed now: a worker killed on the next turn loses nothing spent
            events.publish_ephemeral(
                task.execution_id,
                {
                    "execution_id": task.execution_id,
                    "task": task.key,
                    "turn": turn.number,
                    "tools": [call["name"] for call in turn.tool_calls],
                },
            )

    with Workspace(files, parent=settings.OPENCLAW_WORKSPACES_DIR) as workspace:
        loop = run_loop(
            spec,
            request,
            workspace,
            max_turns=pool.max_turns,
            deadline=deadline,
            run_timeout_sec=pool.run_timeout_sec,
            hooks=Hooks(before_turn, after_turn, keeper.report),
        )
    return loop.reply.as_dict(), loop


def agent_meta(
    task: Task,
    attempt_number: int,
    pool: WorkerPool | None,
    deps: list[dict],
    start: "projects.Start | None" = None,
) -> dict:
    """Structured facts for the offline provider, which has no model to read the prompt with (nor
    the files a real one reads through its tools: a follow-up's schema agent gets the project's SQL)."""
    contract, owned = contract_of(task)
    root_key, root_description = lineage_root(task)
    existing_sql = {}
    if start is not None and task.execution.base_commit and task_role(task, pool) == "database":
        existing_sql = {path: text for path, text in start.files.items() if path.lower().endswith(".sql")}
    return {
        "existing_sql": existing_sql,
        "contract": contract,
        "owned": owned or [],
        "root": root_key,
        "root_description": root_description,
        "conflict_kind": task.context.get("conflict_kind", ""),
        "request": task.execution.message,
        "follow_up": bool(task.execution.base_commit),
        "description": task.description,
        "kind": task.kind,
        "attempt": attempt_number,
        "dependencies": deps,
        "pool_latency_sec": pool.offline_latency_sec if pool else 1.0,
        "target_files": task.context.get("target_files", []),
        "findings": task.context.get("findings", []),
        "round": task.context.get("round", 0),
    }


def record(transition, *args, **kwargs):
    """Record an attempt's outcome, reconnecting once if the database connection dropped meanwhile.

    The transitions are compare-and-set, so a second try after a lost commit acknowledgement is
    harmless. If the database stays away, the lease lapses and the reaper retries the task.
    """
    try:
        return transition(*args, **kwargs)
    except (OperationalError, InterfaceError) as exc:
        log.warning("recording %s failed (%s); reconnecting once", transition.__name__, exc)
        connection.close()
        return transition(*args, **kwargs)


def call_agent(
    task: Task,
    attempt_number: int,
    spec: llm.ModelSpec,
    pool: WorkerPool | None,
    deadline: float,
    keeper: LeaseKeeper,
    meter: TurnMeter,
    deps: list[dict],
    start: projects.Start | None = None,
) -> dict:
    """A single reply (a pool with max_turns 1, or a model without tools): ask the pool's model,
    parse the reply; one repair request on a malformed reply. A follow-up's model is shown the
    project's files (paths and sizes), as it has no workspace to list."""
    base = task_for_prompt(task)
    failure = previous_failure(task, attempt_number)
    meta = agent_meta(task, attempt_number, pool, deps, start)
    follow_up = start is not None and task.execution.base_commit
    existing = sorted((path, len(content)) for path, content in start.files.items()) if follow_up else []
    if existing:
        meta["project_files"] = "\n".join(f"{path}  {size}" for path, size in existing)
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
                    existing_files=existing,
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
        meter.add(completion, {"text": completion.text[:TRANSCRIPT_CHARS]})
        try:
            return parse_agent_reply(completion.text).as_dict()
        except ReplyError as exc:
            if repair:
                raise
            repair = str(exc)
