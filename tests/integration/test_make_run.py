"""`make run` (`manage.py serve`) as an operator meets it: a second run on the same var/ waits for
the first one to stop instead of taking over its embedded Redis (which the first one then stops
under it), and an embedded Redis that stops is started again."""

import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from tests.processes import spawn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(var_dir: Path, port: int, log_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "SQLITE_PATH")}
    env.update(OPENCLAW_VAR_DIR=str(var_dir), OPENCLAW_DEV="1", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "manage.py", "serve", "--port", str(port), "--processes", "1", "--threads", "2"]
    return spawn(argv, env, log_path.open("ab"))


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None  # not listening yet


def wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def redis_ok(port: int) -> bool:
    body = health(port)
    return bool(body) and body["checks"]["redis"] == "ok"


def redis_server_pid(socket_path: Path) -> int | None:
    """The pid of the redis-server answering on the socket, as it reports it; None if none answers."""
    try:
        return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2).info("server")["process_id"]
    except (redis.RedisError, OSError):
        return None


def stop(process) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_a_second_run_waits_for_the_first_and_keeps_its_redis_which_restarts_if_it_stops(tmp_path):
    var_dir = tmp_path / "v"
    first_port, second_port = free_port(), free_port()
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = serve(var_dir, first_port, first_log)
    second = None
    try:
        wait_for(lambda: redis_ok(first_port), "the first run")
        second = serve(var_dir, second_port, second_log)
        wait_for(lambda: "waiting up to" in second_log.read_text(), "the second run to wait")
        assert health(second_port) is None  # it starts nothing while the first one runs
        assert "Embedded Redis" not in second_log.read_text()

        assert stop(first) == 0
        wait_for(lambda: redis_ok(second_port), "the second run")
        # The first one's shutdown is over: the Redis the second one uses is its own, and stays up.
        assert redis_ok(second_port)

        socket_path = var_dir / "redis.sock"
        os.kill(wait_for(lambda: redis_server_pid(socket_path), "the embedded redis-server"), signal.SIGKILL)
        wait_for(lambda: "started again" in second_log.read_text(), "the embedded Redis to restart")
        wait_for(lambda: redis_ok(second_port), "Redis to answer again")
        assert stop(second) == 0
        assert redis_server_pid(socket_path) is None  # stopped with its run
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
