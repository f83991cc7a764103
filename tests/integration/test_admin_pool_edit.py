"""An admin edit of a pool is observed by the very next dispatch, with real workers and no restart."""

import time

from django.urls import reverse

from executions.dispatch import dispatch_ready_tasks
from executions.models import Task
from executions.states import TaskStatus
from pools.models import ConfigChange, WorkerPool
from tests.conftest import configure, wait_for_status

ACTIVE = [TaskStatus.QUEUED, TaskStatus.RUNNING]


def codegen_states(execution_id: str) -> dict[str, str]:
    return dict(Task.objects.filter(execution_id=execution_id, pool="codegen").values_list("key", "status"))


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_raising_max_concurrent_in_the_admin_starts_the_waiting_task(
    workers, client_and_key, admin_client, admin_user
):
    from executions.services import execution_cancel, execution_create

    # Frontend and backend are both codegen and take 30 s, so the first is still busy however slow
    # the machine; the pool runs one at a time. The cancel at the end stops it mid-call.
    configure(
        latency=0.2,
        codegen=1,
        options={"latency_rules": [{"match": "end", "pool": "codegen", "latency_sec": 30}]},
    )
    client, _ = client_and_key
    execution = execution_create(
        client=client,
        message="Build a restaurant website with online booking",
        session_key="pool-edit",
        mode="parallel",
    )
    wait_until(
        lambda: sorted(codegen_states(execution.pk).values()) == ["ready", "running"],
        10,
        "one codegen running",
    )
    # A dispatch pass, as the reaper runs every 0.25 s, queues nothing: the limit of 1 holds.
    assert dispatch_ready_tasks("codegen") == 0
    states = codegen_states(execution.pk)
    assert sorted(states.values()) == ["ready", "running"]
    first = next(key for key, status in states.items() if status == "running")

    pool = WorkerPool.objects.get(name="codegen")
    response = admin_client.post(
        reverse("admin:pools_workerpool_change", args=[pool.pk]),
        {
            "name": "codegen",
            "role": pool.role,
            "expected_output_tokens": pool.expected_output_tokens,
            "enabled": "on",
            "max_concurrent": 2,
            "timeout_sec": pool.timeout_sec,
            "max_retries": pool.max_retries,
            "retry_backoff_sec": pool.retry_backoff_sec,
            "model": pool.model_id,
            "max_turns": pool.max_turns,
            "run_timeout_sec": pool.run_timeout_sec,
            "offline_latency_sec": pool.offline_latency_sec,
        },
    )
    assert response.status_code == 302

    # The next dispatch (the reaper's pass) reads the new limit: both run while the first is still busy.
    both = wait_until(
        lambda: (s := codegen_states(execution.pk)) and all(v in ACTIVE for v in s.values()) and s,
        10,  # a reaper pass and a task start, on a CI machine running two test passes at once
        "the waiting codegen task to start",
    )
    assert both[first] == TaskStatus.RUNNING
    change = ConfigChange.objects.get(
        object_type="pools.workerpool", object_id=str(pool.pk), field="max_concurrent"
    )
    assert (change.old_value, change.new_value, change.user) == ("1", "2", admin_user)
    execution_cancel(execution, by="test")
    wait_for_status(execution.pk, {"cancelled"}, timeout=5)
