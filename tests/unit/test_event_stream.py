"""GET /api/execution/{id}/stream through the real ASGI stack and Redis channel layer: one SSE per
stored event with its seq, type and status, live events as they are committed, a gap the layer
lost filled from the database, resume after Last-Event-ID or ?after=, heartbeats, the end after the
terminal event, and the API's authentication."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator
from django.db import transaction

from executions import events
from executions.models import ApiKey, Client, Execution
from executions.streams import frame
from openclaw_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def make_execution(*types: str) -> tuple[Execution, str]:
    client, _ = Client.objects.get_or_create(name="acme")
    _, key = ApiKey.issue(client)
    execution = Execution.objects.create(
        id=Execution.new_id("sse"), client=client, session_key="s", message="m"
    )
    for type_ in types:
        emit(execution.pk, type_)
    return execution, key


def emit(execution_id: str, type_: str, **payload) -> None:
    task = "task_1" if type_.startswith("task.") else ""
    events.emit(execution_id, type_, task_key=task, payload=payload)


@sync_to_async
def emit_later(execution_id: str, type_: str, **payload) -> None:
    emit(execution_id, type_, **payload)


@sync_to_async
def store_unpublished(execution_id: str, type_: str) -> None:
    """An event committed whose publish the channel layer lost."""
    with transaction.atomic():
        events._append(execution_id, [(type_, "", None)])


class Stream:
    """An SSE response read message by message, as a client reads it off the socket."""

    def __init__(self, execution_id: str, key: str | None, *, query: str = "", headers=()):
        scope_headers = [(b"host", b"localhost"), *headers]
        if key:
            scope_headers.append((b"x-api-key", key.encode()))
        self.app = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "method": "GET",
                "path": f"/api/execution/{execution_id}/stream",
                "raw_path": f"/api/execution/{execution_id}/stream".encode(),
                "query_string": query.encode(),
                "headers": scope_headers,
                "http_version": "1.1",
                "scheme": "http",
                "server": ("localhost", 80),
                "client": ("127.0.0.1", 5000),
            },
        )
        self.buffer = b""
        self.ended = False

    async def open(self) -> dict:
        await self.app.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.app.receive_output(10)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return start

    async def chunk(self, timeout: float = 10) -> None:
        message = await self.app.receive_output(timeout)
        assert message["type"] == "http.response.body"
        self.buffer += message.get("body", b"")
        self.ended = not message.get("more_body", False)

    async def items(self, count: int, timeout: float = 10) -> list[dict]:
        """The next `count` SSE items (events, or {"comment": …} for a comment line)."""
        found: list[dict] = []
        while len(found) < count:
            while b"\n\n" not in self.buffer:
                assert not self.ended, f"the stream ended after {found}"
                await self.chunk(timeout)
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            lines = block.decode().split("\n")
            if lines[0].startswith(":"):
                found.append({"comment": lines[0][1:].strip()})
                continue
            fields = dict(line.split(": ", 1) for line in lines)
            found.append(
                {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            )
        return found

    async def end(self, timeout: float = 10) -> bytes:
        """Read to the end of the response; what is left beyond the events read (an SSE stream
        leaves nothing)."""
        while not self.ended:
            await self.chunk(timeout)
        if self.status == 200:
            assert self.buffer == b""
        return self.buffer

    async def close(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(5)


async def test_stored_then_live_events_each_once_in_order_until_the_terminal_one():
    execution, key = await make_execution("execution.created", "execution.planned", "task.queued")
    stream = Stream(execution.pk, key)
    await stream.open()
    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"

    stored = await stream.items(3)
    assert [(e["id"], e["event"]) for e in stored] == [
        (1, "execution.created"),
        (2, "execution.planned"),
        (3, "task.queued"),
    ]
    assert stored[0]["data"]["status"] == "planning" and stored[1]["data"]["status"] == "executing"
    assert "status" not in stored[2]["data"] and stored[2]["data"]["task"] == "task_1"
    assert stored[2]["data"] == {
        **stored[2]["data"],
        "execution_id": execution.pk,
        "seq": 3,
        "type": "task.queued",
    }

    await emit_later(execution.pk, "task.started")  # published once committed
    (live,) = await stream.items(1)
    assert (live["id"], live["event"]) == (4, "task.started")

    await store_unpublished(execution.pk, "task.succeeded")  # the layer loses this one
    await emit_later(execution.pk, "execution.aggregating")
    gap = await stream.items(2)
    assert [(e["id"], e["event"]) for e in gap] == [(5, "task.succeeded"), (6, "execution.aggregating")]

    await emit_later(execution.pk, "execution.finished", status="completed")
    await emit_later(execution.pk, "task.ready")  # after the end: never sent on this stream
    (last,) = await stream.items(1)
    assert last["event"] == "execution.finished" and last["data"]["status"] == "completed"
    await stream.end()
    await stream.app.wait(5)


@pytest.mark.parametrize("resume", ["last-event-id", "after"])
async def test_a_stream_resumes_after_the_last_event_received(resume):
    execution, key = await make_execution(
        "execution.created", "execution.planned", "task.queued", "task.started"
    )
    if resume == "last-event-id":
        stream = Stream(execution.pk, key, headers=[(b"last-event-id", b"2")])
    else:
        stream = Stream(execution.pk, key, query="after=2")
    await stream.open()

    assert [e["id"] for e in await stream.items(2)] == [3, 4]
    await emit_later(execution.pk, "execution.finished", status="failed")
    assert [e["id"] for e in await stream.items(1)] == [5]
    await stream.end()


async def test_an_idle_stream_sends_heartbeats_and_still_hears_the_next_event(settings):
    settings.OPENCLAW_SSE_HEARTBEAT_SEC = 0.2
    execution, key = await make_execution("execution.created")
    stream = Stream(execution.pk, key)
    await stream.open()

    assert (await stream.items(1))[0]["id"] == 1
    assert await stream.items(2) == [{"comment": "heartbeat"}, {"comment": "heartbeat"}]
    await emit_later(execution.pk, "execution.planned")
    item = (await stream.items(1))[0]
    while "comment" in item:  # a heartbeat may come first
        item = (await stream.items(1))[0]
    assert item["id"] == 2 and item["event"] == "execution.planned"
    await stream.close()


async def test_a_stream_of_an_execution_that_already_ended_closes_after_its_events():
    execution, key = await make_execution("execution.created")
    await emit_later(execution.pk, "execution.finished", status="cancelled")
    await sync_to_async(Execution.objects.filter(pk=execution.pk).update)(status="cancelled")

    stream = Stream(execution.pk, key, query="after=2")
    await stream.open()
    await stream.end()  # nothing after the last event, and nothing will come

    replay = Stream(execution.pk, key, query="after=1")
    await replay.open()
    assert [e["id"] for e in await replay.items(1)] == [2]
    await replay.end()


async def test_the_stream_is_authenticated_like_the_rest_of_the_api():
    execution, key = await make_execution("execution.created")
    other_client = await sync_to_async(Client.objects.create)(name="globex")
    _, other_key = await sync_to_async(ApiKey.issue)(other_client)

    for stream_key, headers, query, status in [
        (None, [], "", 401),
        ("oc_wrong", [], "", 401),
        (other_key, [], "", 404),
        (key, [(b"last-event-id", b"soon")], "", 422),
        (key, [], "after=-1", 422),
    ]:
        stream = Stream(execution.pk, stream_key, headers=headers, query=query)
        await stream.open()
        assert stream.status == status, (stream_key, headers, query)
        assert json.loads(await stream.end())["detail"]

    bearer = Stream(execution.pk, None, headers=[(b"authorization", f"Bearer {key}".encode())])
    await bearer.open()
    assert bearer.status == 200
    await bearer.close()


def test_a_frame_is_one_sse_whose_data_is_a_single_line():
    message = {
        "execution_id": "e",
        "seq": 7,
        "type": "execution.finished",
        "task": None,
        "payload": {"status": "partial", "note": "two\nlines"},
        "at": "2026-01-01T00:00:00+00:00",
    }
    text = frame(message).decode()
    assert text.endswith("\n\n") and text.count("\n") == 4
    lines = text.split("\n")
    assert lines[0] == "id: 7" and lines[1] == "event: execution.finished"
    assert json.loads(lines[2].removeprefix("data: ")) == {**message, "status": "partial"}


async def test_many_streams_of_one_execution_each_get_every_event():
    execution, key = await make_execution("execution.created")
    streams = [Stream(execution.pk, key) for _ in range(20)]
    await asyncio.gather(*(s.open() for s in streams))
    await asyncio.gather(*(s.items(1) for s in streams))
    await emit_later(execution.pk, "execution.planned")
    await emit_later(execution.pk, "execution.finished", status="completed")
    for stream in streams:
        assert [e["id"] for e in await stream.items(2)] == [2, 3]
        await stream.end()
