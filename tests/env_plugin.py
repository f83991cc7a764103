"""Loaded with `-p` before Django's settings are read.

The test suite keeps its own var/ (database, logs) so it never touches the data of a `make run` on
the same checkout, and, when REDIS_URL is not set, starts its own embedded Redis on a socket of
its own for the session (stopped at the end).
"""

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OPENCLAW_VAR_DIR", str(ROOT / "var" / "test"))
# The servers and workers the tests start speak plain HTTP and sign with a key generated under
# var/test (settings: a local run). pytest-django still turns settings.DEBUG off in this process.
os.environ.setdefault("DEBUG", "1")
# The suite waits on its workers and their sandboxes, which share the cores with the test process,
# chromium and, in CI, the other pass: no lower priority for them here (tests/integration/
# test_sandbox.py checks the niceness itself).
os.environ.setdefault("OPENCLAW_SANDBOX_NICE", "0")
_embedded = None


def _start_embedded_redis() -> None:
    global _embedded
    import sys

    sys.path.insert(0, str(ROOT))
    from openclaw_site import embedded_redis

    var = Path(os.environ["OPENCLAW_VAR_DIR"])
    var.mkdir(parents=True, exist_ok=True)
    socket_path = var / f"redis-{os.getpid()}.sock"
    _embedded = embedded_redis.start(socket_path, data_dir=var / f"redis-{os.getpid()}", appendonly=False)
    os.environ["REDIS_URL"] = f"unix://{socket_path}?db=0"
    os.environ["OPENCLAW_EMBEDDED_REDIS"] = "1"


def restart_embedded_redis(down_sec: float) -> None:
    """Stop the session's embedded Redis (losing everything: it keeps nothing on disk) and start it again."""
    global _embedded
    from openclaw_site import embedded_redis

    socket_path = Path(os.environ["REDIS_URL"].removeprefix("unix://").split("?")[0])
    _embedded.kill()
    _embedded.wait(timeout=10)
    time.sleep(down_sec)
    _embedded = embedded_redis.start(
        socket_path, data_dir=socket_path.parent / f"redis-{os.getpid()}", appendonly=False
    )


# At import, which pytest does for `-p` plugins before pytest-django reads the settings.
if "REDIS_URL" not in os.environ:
    _start_embedded_redis()


def pytest_unconfigure(config):
    if _embedded is not None:
        _embedded.terminate()
        _embedded.wait(timeout=10)
        import shutil

        shutil.rmtree(Path(os.environ["OPENCLAW_VAR_DIR"]) / f"redis-{os.getpid()}", ignore_errors=True)
