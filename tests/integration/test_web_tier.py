"""The web tier: daphne processes sharing one listening socket, as `make run --web-processes N`
starts them. Each of them serves the site: with either one stopped, the other answers every
request from the shared accept queue."""

import json
import os
import signal
import urllib.request

import pytest

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
