"""The console's websockets through the real ASGI stack (Origin check, session auth, Redis layer)."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client as HttpClient

from executions import events
from executions.models import Client, Event, Execution
from openclaw_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://localhost"


def make_user(username: str, *, staff: bool):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username, password="pw-12345678", is_staff=staff)


def session_cookie(user) -> bytes:
    browser = HttpClient()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}".encode()


def make_execution(n_events: int) -> Execution:
    client, _ = Client.objects.get_or_create(name="acme")
    execution = Execution.objects.create(
        id=Execution.new_id("ws"), client=client, session_key="ws", message="Build it"
    )
    for i in range(n_events):
        events.emit(execution.pk, "task.queued", task_key=f"task_{i + 1}", payload={"pool": "codegen"})
    return execution


def communicator(path: str, *, cookie: bytes | None = None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"host", b"localhost"), (b"origin", origin)]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_until_synced(ws: WebsocketCommunicator) -> tuple[list[int], int]:
    seqs = []
    while True:
        message = await ws.receive_json_from(timeout=5)
        if message["kind"] == "synced":
            return seqs, message["last_seq"]
        assert message["kind"] == "event"
        seqs.append(message["event"]["seq"])


async def assert_next_is_a_fresh_event(ws: WebsocketCommunicator, execution: Execution, seq: int) -> None:
    """The positive signal that whatever reached the consumer before was handled: a new event
    emitted now comes through next, so nothing (a duplicate, a second replay) was sent before it."""
    await sync_to_async(events.emit)(execution.pk, "task.ready", task_key="task_9")
    message = await ws.receive_json_from(timeout=5)
    assert (message["kind"], message["event"]["seq"]) == ("event", seq)


@pytest.fixture(autouse=True)
async def _close_consumer_connections():
    """The consumers query from asgiref's sync thread; close its connection so PostgreSQL can
    drop the test database at the end."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def staff_cookie():
    return session_cookie(make_user("ops", staff=True))


async def test_anonymous_is_closed():
    execution = await sync_to_async(make_execution)(1)
    for path in (f"/ws/executions/{execution.pk}/", "/ws/console/"):
        connected, code = await communicator(path).connect()
        assert (connected, code) == (False, 4403)


async def test_non_staff_user_is_closed():
    execution = await sync_to_async(make_execution)(1)
    cookie = await sync_to_async(session_cookie)(await sync_to_async(make_user)("client-user", staff=False))
    for path in (f"/ws/executions/{execution.pk}/", "/ws/console/"):
        connected, code = await communicator(path, cookie=cookie).connect()
        assert (connected, code) == (False, 4403)


async def test_foreign_origin_is_closed_even_for_staff(staff_cookie):
    execution = await sync_to_async(make_execution)(1)
    for origin in (b"http://evil.example", b"null"):
        connected, _ = await communicator(
            f"/ws/executions/{execution.pk}/", cookie=staff_cookie, origin=origin
        ).connect()
        assert connected is False
    ws = communicator(f"/ws/executions/{execution.pk}/", cookie=staff_cookie)
    connected, _ = await ws.connect()
    assert connected
    await ws.disconnect()


async def test_unknown_execution_is_closed(staff_cookie):
    connected, code = await communicator("/ws/executions/exec_nope_1_abc/", cookie=staff_cookie).connect()
    assert (connected, code) == (False, 4404)


async def test_resume_after_seq_replays_exactly_the_missed_events_then_live_ones(staff_cookie):
    execution = await sync_to_async(make_execution)(5)
    ws = communicator(f"/ws/executions/{execution.pk}/?after=2", cookie=staff_cookie)
    assert (await ws.connect())[0]
    seqs, last = await receive_until_synced(ws)
    assert (seqs, last) == ([3, 4, 5], 5)

    await sync_to_async(events.emit)(execution.pk, "task.started", task_key="task_1", payload={"attempt": 1})
    live = await ws.receive_json_from(timeout=5)
    assert live["kind"] == "event"
    assert (live["event"]["seq"], live["event"]["type"], live["event"]["task"]) == (
        6,
        "task.started",
        "task_1",
    )

    # The page lost messages after seq 3: it asks again and gets exactly 4..6.
    await ws.send_json_to({"resume": 3})
    seqs, last = await receive_until_synced(ws)
    assert (seqs, last) == ([4, 5, 6], 6)
    await assert_next_is_a_fresh_event(ws, execution, 7)
    await ws.disconnect()


async def test_a_dropped_live_message_is_filled_in_from_the_database(staff_cookie):
    execution = await sync_to_async(make_execution)(2)
    ws = communicator(f"/ws/executions/{execution.pk}/?after=2", cookie=staff_cookie)
    assert (await ws.connect())[0]
    assert await receive_until_synced(ws) == ([], 2)

    def store_without_publishing() -> dict:
        Event.objects.create(execution=execution, seq=3, type="task.started", task_key="task_1")
        fourth = Event.objects.create(execution=execution, seq=4, type="task.succeeded", task_key="task_1")
        Execution.objects.filter(pk=execution.pk).update(next_seq=4)
        return fourth.as_message()

    fourth = await sync_to_async(store_without_publishing)()
    # Only seq 4 reaches the group (the layer dropped 3): the consumer must not pass on a gap.
    await get_channel_layer().group_send(
        events.execution_group(execution.pk), {"type": "event.message", "event": fourth}
    )
    seqs, last = await receive_until_synced(ws)
    assert (seqs, last) == ([3, 4], 4)
    # A duplicate delivery of an event already sent is dropped.
    await get_channel_layer().group_send(
        events.execution_group(execution.pk), {"type": "event.message", "event": fourth}
    )
    await assert_next_is_a_fresh_event(ws, execution, 5)
    await ws.disconnect()


async def test_a_transitions_events_arrive_one_by_one_in_order_on_both_streams(staff_cookie):
    execution = await sync_to_async(make_execution)(1)
    stream = communicator(f"/ws/executions/{execution.pk}/?after=1", cookie=staff_cookie)
    console = communicator("/ws/console/", cookie=staff_cookie)
    assert (await stream.connect())[0] and (await console.connect())[0]
    # Both consumers join their group before accepting, so connect() returning is the signal.
    assert await receive_until_synced(stream) == ([], 1)
    await sync_to_async(events.emit_many)(
        execution.pk,
        [
            ("task.started", "task_1", None),
            ("task.succeeded", "task_1", None),
            ("task.ready", "task_2", None),
        ],
    )
    for ws in (stream, console):
        received = [(await ws.receive_json_from(timeout=5))["event"] for _ in range(3)]
        assert [(e["seq"], e["type"]) for e in received] == [
            (2, "task.started"),
            (3, "task.succeeded"),
            (4, "task.ready"),
        ]
    await stream.disconnect()
    await console.disconnect()


async def test_a_batch_after_a_dropped_message_is_replayed_from_the_database(staff_cookie):
    execution = await sync_to_async(make_execution)(1)
    ws = communicator(f"/ws/executions/{execution.pk}/?after=1", cookie=staff_cookie)
    assert (await ws.connect())[0]
    assert await receive_until_synced(ws) == ([], 1)

    def store_without_publishing() -> list[dict]:
        stored = [
            Event.objects.create(execution=execution, seq=seq, type="task.started", task_key=f"task_{seq}")
            for seq in (2, 3, 4)
        ]
        Execution.objects.filter(pk=execution.pk).update(next_seq=4)
        return [event.as_message() for event in stored]

    second, third, fourth = await sync_to_async(store_without_publishing)()
    # seq 2 was lost; the batch of 3 and 4 makes the consumer replay, and nothing is sent twice.
    await get_channel_layer().group_send(
        events.execution_group(execution.pk), {"type": "event.batch", "events": [third, fourth]}
    )
    assert await receive_until_synced(ws) == ([2, 3, 4], 4)
    await assert_next_is_a_fresh_event(ws, execution, 5)
    await ws.disconnect()


async def test_progress_ticks_are_forwarded(staff_cookie):
    execution = await sync_to_async(make_execution)(1)
    ws = communicator(f"/ws/executions/{execution.pk}/", cookie=staff_cookie)
    assert (await ws.connect())[0]
    await receive_until_synced(ws)
    tick = {"execution_id": execution.pk, "task": "task_1", "progress": 40}
    await sync_to_async(events.publish_ephemeral)(execution.pk, tick)
    assert await ws.receive_json_from(timeout=5) == {"kind": "progress", "progress": tick}
    await ws.disconnect()


async def test_console_stream_carries_every_execution(staff_cookie):
    first, second = await sync_to_async(make_execution)(0), await sync_to_async(make_execution)(0)
    ws = communicator("/ws/console/", cookie=staff_cookie)
    assert (await ws.connect())[0]
    # The consumer joins the group before accepting: connect() returning is the signal.
    await sync_to_async(events.emit)(first.pk, "execution.planned", payload={"mode": "parallel"})
    await sync_to_async(events.emit)(second.pk, "execution.cancelled")
    received = [await ws.receive_json_from(timeout=5) for _ in range(2)]
    assert {(m["event"]["execution_id"], m["event"]["type"]) for m in received} == {
        (first.pk, "execution.planned"),
        (second.pk, "execution.cancelled"),
    }
    await ws.disconnect()


async def test_live_events_reach_the_handler_without_a_hop_to_the_sync_thread(staff_cookie, monkeypatch):
    """Channels closes stale database connections before each handler, in the thread sync code
    shares; live events never touch the database, so they skip it. What the client sends does not."""
    import channels.consumer

    cleanups = []
    real_cleanup = channels.consumer.aclose_old_connections

    async def counted_cleanup():
        cleanups.append(1)
        await real_cleanup()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted_cleanup)
    execution = await sync_to_async(make_execution)(1)
    ws = communicator(f"/ws/executions/{execution.pk}/?after=1", cookie=staff_cookie)
    assert (await ws.connect())[0]
    assert await receive_until_synced(ws) == ([], 1)
    before = len(cleanups)
    await sync_to_async(events.emit_many)(execution.pk, [("task.started", "task_1", None)])
    await sync_to_async(events.emit)(execution.pk, "task.succeeded", task_key="task_1")
    assert [(await ws.receive_json_from(timeout=5))["event"]["seq"] for _ in range(2)] == [2, 3]
    assert len(cleanups) == before
    await ws.send_json_to({"resume": 2})
    assert await receive_until_synced(ws) == ([3], 3)
    assert len(cleanups) == before + 1
    await ws.disconnect()
