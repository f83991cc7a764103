"""Building blocks for tests: a client, pools, an execution with tasks, a project (no broker
involved)."""

import base64
import contextlib
import random
from decimal import Decimal
from unittest import mock

from django.utils import timezone

from executions import projects
from executions.models import ApiKey, Client, Execution, Project, Task
from pools import git_store
from pools.models import EngineSettings, ModelProfile, WorkerPool


def make_pools(limits: dict[str, int] | None = None, *, retries: int = 2, backoff: float = 0.0) -> None:
    offline, _ = ModelProfile.objects.get_or_create(
        name="offline",
        defaults={
            "provider": "offline",
            "model": "openclaw-offline-1",
            "input_per_mtok": Decimal("3"),
            "output_per_mtok": Decimal("15"),
        },
    )
    for name, limit in (limits or {"codegen": 3, "security": 2, "database": 2}).items():
        WorkerPool.objects.update_or_create(
            name=name,
            defaults={
                "max_concurrent": limit,
                "timeout_sec": 60,
                "max_retries": retries,
                "retry_backoff_sec": backoff,
                "model": offline,
                "offline_latency_sec": 0.1,
            },
        )
    engine = EngineSettings.current()
    engine.pm_model = offline
    engine.save()


def make_client(name: str = "acme") -> tuple[Client, str]:
    client = Client.objects.create(name=name)
    _, raw = ApiKey.issue(client)
    return client, raw


def make_execution(client: Client, tasks: list[dict], *, status: str = "executing") -> Execution:
    """An execution in `executing` with the given tasks ({key, pool, blocked_by, rank, priority, status})."""
    execution = Execution.objects.create(
        id=Execution.new_id("t"),
        client=client,
        session_key="t",
        message="m",
        status=status,
        mode="parallel",
        started_at=timezone.now(),
    )
    for spec in tasks:
        Task.objects.create(
            execution=execution,
            key=spec["key"],
            pool=spec.get("pool", "codegen"),
            description=spec.get("description", spec["key"]),
            blocked_by=spec.get("blocked_by", []),
            rank=spec.get("rank", 1.0),
            priority=spec.get("priority", 1),
            status=spec.get("status", "pending" if spec.get("blocked_by") else "ready"),
            weight=spec.get("weight", 1.0),
            timeout_sec=spec.get("timeout_sec", 60),
        )
    return execution


def make_project(client: Client, name: str, files: dict[str, str]) -> str:
    """A project whose `main` is one commit of these files, its objects in the database as a
    landing leaves them; the commit's id."""
    repo, project = projects.open_project(client.pk, name)
    tree = git_store.overlay(repo, None, files)
    commit = git_store.create_commit(
        repo, tree=tree, parents=[], author=("test", "test@openclaw"), message="files"
    )
    projects.push(repo, project, [commit])
    Project.objects.filter(pk=project.pk).update(head=commit)
    return commit


def incompressible_text(seed: int, size: int) -> str:
    """`size` characters of text that zlib cannot shrink much (base64 of random bytes)."""
    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4)).decode()


@contextlib.contextmanager
def run_task_messages():
    """The run_task messages sent meanwhile, as (task id, dispatch number, pool), instead of the
    broker's: whether sent alone (`send_run_task`) or a dispatch's together (`send_run_tasks`)."""
    sent: list[tuple[int, int, str]] = []
    with (
        mock.patch(
            "executions.messages.send_run_task",
            side_effect=lambda task_id, dispatch_no, pool: sent.append((task_id, dispatch_no, pool)),
        ),
        mock.patch(
            "executions.messages.send_run_tasks",
            side_effect=lambda pool, dispatches: sent.extend((t, d, pool) for t, d in dispatches),
        ),
    ):
        yield sent
