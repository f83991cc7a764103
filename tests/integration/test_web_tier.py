"""The web tier: daphne processes sharing one listening socket, as `make run --web-processes N`
starts them. Each of them serves the site: with either one stopped, the other answers every
request from the shared accept queue."""

import json
import os
import signal
import time
import urllib.request

import pytest

from executions.events import WARM_UP_GROUP
from tests.processes import Daphne, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_every_daphne_on_the_shared_socket_serves(settings, redis_server):
    with Daphne(worker_env(), settings.VAR_DIR / "test-logs" / "daphne-tier.log", processes=2) as web:
        first, second = web.processes
        for paused, serving in ((first, second), (second, first)):
            os.kill(paused.pid, signal.SIGSTOP)
            try:
                # New connections, each accepted by the process that still runs.
                for _ in range(5):
                    assert health(web.url)["status"] == "ok"
            finally:
                os.kill(paused.pid, signal.SIGCONT)
            assert serving.poll() is None and paused.poll() is None


def test_each_daphne_connects_its_event_publisher_at_start(settings, redis_server):
    # Each process's publisher sends its warm-up to a group nobody reads: one PUBLISH per process.
    listener = redis_server.pubsub()
    listener.psubscribe(f"*{WARM_UP_GROUP}*")
    listener.get_message(timeout=5)  # the subscription's confirmation
    with Daphne(worker_env(), settings.VAR_DIR / "test-logs" / "daphne-warm.log", processes=2):
        warmed = []
        deadline = time.monotonic() + 30
        while len(warmed) < 2 and time.monotonic() < deadline:
            message = listener.get_message(timeout=1)
            if message and message["type"] == "pmessage":
                warmed.append(message)
    listener.close()
    assert len(warmed) == 2
