"""The site's ASGI entry runs Django's (synchronous) middleware as one chain, in one thread hop."""

import asyncio
from unittest import mock

import pytest
from asgiref.sync import SyncToAsync, iscoroutinefunction
from asgiref.testing import ApplicationCommunicator

from openclaw_site.asgi import application, django_asgi_app


def get(path: str) -> tuple[dict, int]:
    """An HTTP GET through the ASGI application in process: the response start, and the thread
    hops (sync_to_async calls) it took."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    hops = 0
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        nonlocal hops
        hops += 1
        return await original(self, *args, **kwargs)

    async def exchange() -> dict:
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(10)
        await communicator.receive_output(10)  # the body
        await communicator.wait(10)
        return start

    with mock.patch.object(SyncToAsync, "__call__", counted):
        start = asyncio.run(exchange())
    return start, hops


def test_the_middleware_is_one_synchronous_chain():
    assert not iscoroutinefunction(django_asgi_app._middleware_chain)


@pytest.mark.django_db(transaction=True)
def test_a_request_goes_through_every_middleware_in_a_few_hops(redis_server):
    start, hops = get("/healthz")
    headers = {name.lower(): value for name, value in start["headers"]}
    assert start["status"] == 200
    assert headers[b"x-frame-options"] == b"DENY"  # the last middleware ran
    assert headers[b"x-content-type-options"] == b"nosniff"  # and the first
    # The chain and the view in one hop, plus the request's signals and closing; Django's own
    # handler took one or two hops for each middleware hook (17 here).
    assert hops <= 4, hops
