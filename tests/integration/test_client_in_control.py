"""The client in control, with real workers and a real receiver: a plan that waits for approval
calls no pool and charges no fee until approved, then runs exactly the edited tasks; every webhook
arrives signed, in order, and one answered 500 three times arrives four times under one delivery
id and nothing else."""

import json

import pytest

from executions.models import Attempt, Execution, LedgerEntry, Task, WebhookDelivery
from tests.conftest import Workers, configure, wait_for_status, worker_env
from tests.fakes.webhook_receiver import Receiver
from tests.processes import Daphne

WEBHOOK_ENV = {"OPENCLAW_WEBHOOK_ALLOW_PRIVATE": "1", "OPENCLAW_WEBHOOK_RETRY_BASE_SEC": "0.3"}


@pytest.fixture
def webhook_workers(transactional_db, redis_server, settings):
    settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE = True  # the receivers listen on 127.0.0.1
    running = Workers(env=WEBHOOK_ENV).start()
    yield running
    running.stop()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def wait_for_delivery(execution_id: str, event: str, status: str, timeout: float = 30) -> WebhookDelivery:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = WebhookDelivery.objects.filter(execution_id=execution_id, event=event).first()
        if delivery is not None and delivery.status == status:
            return delivery
        time.sleep(0.1)
    raise AssertionError(f"no {status} {event} delivery for {execution_id} in {timeout}s")


def test_a_webhook_answered_500_three_times_arrives_four_times_under_one_id(
    webhook_workers, receivers, client_and_key
):
    from executions.services import execution_create

    configure(latency=0.1)
    client, _ = client_and_key
    receiver = receivers(statuses=[500, 500, 500, 200], secret=client.ensure_webhook_secret())
    client.default_callback_url = receiver.url
    client.save()

    execution = execution_create(client=client, message="Build a landing page", session_key="hooks")
    assert wait_for_status(execution.pk, {"completed", "partial", "failed"}).status == "completed"
    delivery = wait_for_delivery(execution.pk, "execution.completed", "delivered")

    requests = receiver.received
    assert [r.status for r in requests] == [500, 500, 500, 200]
    assert {r.headers["X-OpenClaw-Delivery"] for r in requests} == {str(delivery.delivery_id)}
    assert {r.headers["X-OpenClaw-Event"] for r in requests} == {"execution.completed"}
    assert all(r.signature_ok for r in requests) and len({r.body for r in requests}) == 1
    assert requests[0].json["data"]["status"] == "completed"
    assert WebhookDelivery.objects.filter(execution=execution).count() == 1 and delivery.attempts == 4


def test_a_plan_awaiting_approval_runs_nothing_until_approved_then_exactly_the_edited_tasks(
    webhook_workers, receivers, client_and_key, client
):
    configure(latency=0.1)
    owner, key = client_and_key
    receiver = receivers(secret=owner.ensure_webhook_secret())
    response = client.post(
        "/api/execute-parallel",
        data=json.dumps(
            {
                "message": "Build a restaurant website with online booking and secure payments",
                "approval": "plan",
                "callback_url": receiver.url,
                "mode": "parallel",
            }
        ),
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    execution_id = response.json()["execution_id"]
    wait_for_status(execution_id, {"awaiting_approval"})
    (announced,) = receiver.wait_for(1)
    assert announced.headers["X-OpenClaw-Event"] == "execution.awaiting_approval" and announced.signature_ok
    quote = announced.json["data"]
    assert quote["status"] == "awaiting_approval" and quote["fee_usd"] == "0.00" and quote["plan"]["tasks"]

    # Nothing runs while it waits: the reaper's passes find no task to dispatch.
    wait_for_delivery(execution_id, "execution.awaiting_approval", "delivered")
    assert not Task.objects.filter(execution_id=execution_id).exists()
    assert not Attempt.objects.filter(task__execution_id=execution_id).exists()
    assert not LedgerEntry.objects.filter(execution_id=execution_id, kind="fee").exists()

    kept = quote["plan"]["tasks"][:2]
    for task in kept:
        task["blocked_by"] = [d for d in task["blocked_by"] if d in {t["id"] for t in kept}]
        task["soft_deps"] = [d for d in task["soft_deps"] if d in {t["id"] for t in kept}]
    kept[0]["description"] += " (edited)"
    approved = client.post(
        f"/api/execution/{execution_id}/approve",
        data=json.dumps({"tasks": kept}),
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    assert approved.status_code == 200, approved.content

    done = wait_for_status(execution_id, {"completed", "partial", "failed"})
    assert done.status == "completed"
    ran = set(Attempt.objects.filter(task__execution_id=execution_id).values_list("task__key", flat=True))
    planned = set(Task.objects.filter(execution_id=execution_id, kind="plan").values_list("key", flat=True))
    assert planned == {t["id"] for t in kept} and planned <= ran
    assert Task.objects.get(execution_id=execution_id, key=kept[0]["id"]).description.endswith("(edited)")
    assert (
        Execution.objects.get(pk=execution_id).fee_usd
        == LedgerEntry.objects.get(execution_id=execution_id, kind="fee").amount_usd
    )
    wait_for_delivery(execution_id, "execution.completed", "delivered")
    assert [r.headers["X-OpenClaw-Event"] for r in receiver.received] == [
        "execution.awaiting_approval",
        "execution.completed",
    ]


# ---------------------------------------------------------------- the event stream over HTTP


@pytest.fixture
def daphne(transactional_db, settings):
    """daphne serving the ASGI app on the test database, as in production."""
    env = worker_env({"OPENCLAW_SSE_HEARTBEAT_SEC": "1"})
    with Daphne(env, settings.VAR_DIR / "test-logs" / "daphne-sse.log") as server:
        yield server.url


def read_sse(response, *, stop_after: int | None = None) -> tuple[list[dict], int]:
    """The events of an SSE response (and how many heartbeats came), until it ends or
    `stop_after` events arrived."""
    found, heartbeats, fields = [], 0, {}
    for line in response.iter_lines():
        if line.startswith(":"):
            heartbeats += 1
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            found.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
            fields = {}
            if stop_after is not None and len(found) >= stop_after:
                break
    return found, heartbeats


def test_a_stream_dropped_midway_resumes_by_last_event_id_losing_and_repeating_nothing(
    workers, daphne, client_and_key
):
    import httpx

    from executions.models import Event
    from executions.services import execution_create

    configure(latency=0.4)
    owner, key = client_and_key
    execution = execution_create(
        client=owner,
        message="Build a restaurant website with online booking and secure payments",
        session_key="s",
    )
    url = f"{daphne}/api/execution/{execution.pk}/stream"
    with httpx.stream("GET", url, headers={"X-API-Key": key}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first, _ = read_sse(response, stop_after=4)
    # The connection is dropped here, while the execution goes on.
    resume = {"X-API-Key": key, "Last-Event-ID": str(first[-1]["id"])}
    with httpx.stream("GET", url, headers=resume, timeout=60) as response:
        rest, _ = read_sse(response)  # until the server ends the stream

    seqs = [e["id"] for e in first + rest]
    stored = list(Event.objects.filter(execution=execution).order_by("seq").values_list("seq", "type"))
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice
    assert [(e["id"], e["event"]) for e in first + rest] == stored[: len(seqs)]
    assert rest[-1]["event"] == "execution.finished" and rest[-1]["data"]["status"] == "completed"
    assert seqs[-1] == stored[-1][0]  # it ended right after the terminal event
    statuses = [e["data"]["status"] for e in first + rest if "status" in e["data"]]
    assert statuses == ["planning", "executing", "aggregating", "completed"]
