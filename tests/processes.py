"""Real processes on this process's database and Redis: `rundramatiq` plus the reaper, daphne.

Test and benchmark tooling (not part of the product): the integration tests and `python -m bench`
both need the processes `make run` starts, pointed at a database of their own.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis
from django.conf import settings

from executions.worker_identity import WORKERS_KEY
from openclaw_site import web_tier
from openclaw_site.child_processes import die_with_parent

ROOT = Path(__file__).resolve().parent.parent


def spawn(
    argv: list[str], env: dict, log, *, pass_fds: tuple[int, ...] = (), cwd: Path = ROOT
) -> subprocess.Popen:
    """A child in a session of its own (its group is stopped whole), dying with this process,
    writing to `log`."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
        pass_fds=pass_fds,
    )


def answers(url: str, processes: list[subprocess.Popen], timeout: float) -> bool:
    """Whether `url` answers (any 2xx) before `timeout`, while every one of `processes` runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def worker_env(extra: dict | None = None) -> dict:
    """This process's environment, with the database and Redis it uses spelled out for children."""
    from django.db import connection  # noqa: PLC0415 (this module is imported before Django is set up)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = str(db["NAME"])
        env.pop("DATABASE_URL", None)
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}"
            f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra or {})
    return env


class Workers:
    """Real `rundramatiq` worker processes and a reaper, against this process's database."""

    def __init__(
        self, threads: int = 12, env: dict | None = None, *, processes: int = 1, logs: Path | None = None
    ):
        self.env = worker_env(env)
        self.threads = threads
        self.processes = processes
        self.logs = logs or settings.VAR_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.workers: subprocess.Popen | None = None
        self.reaper: subprocess.Popen | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child writes to it for its whole life)
        return spawn([sys.executable, "manage.py", *args], self.env, log)

    def start(self) -> "Workers":
        self.start_workers()
        self.reaper = self._spawn("reaper", ["reaper"])
        return self

    def start_workers(self) -> None:
        self.workers = self._spawn(
            "workers",
            [
                "rundramatiq",
                "--processes",
                str(self.processes),
                "--threads",
                str(self.threads),
                "--worker-shutdown-timeout",
                "2000",
            ],
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Ready once each new worker process has booted and announced itself in Redis
        (`AnnounceWorker`). Not a heartbeat: every Redis command of any broker, a client's
        enqueue included, adds one, and a broker's heartbeat comes and goes with its timeout."""
        client = redis.Redis.from_url(settings.REDIS_URL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            announced = {int(member.split(b":")[1]) for member in client.smembers(WORKERS_KEY)}
            if len(announced & set(self.worker_pids())) >= self.processes:
                return
            if self.workers.poll() is not None:
                raise RuntimeError(f"workers exited early; see {self.logs}/workers.log")
            time.sleep(0.1)
        raise RuntimeError("workers did not start")

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the dramatiq main process)."""
        out = subprocess.run(["pgrep", "-P", str(self.workers.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_workers(self, sig=signal.SIGKILL) -> None:
        os.killpg(self.workers.pid, sig)
        self.workers.wait(timeout=10)

    def stop(self) -> None:
        for process in (self.workers, self.reaper):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.workers, self.reaper):
            if process:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


class Daphne:
    """daphne serving the ASGI app (pages, API, websockets, static files, clones) on a free local
    port, as in production; `url` once it answers `/healthz`. `processes` daphne processes share
    the listening socket, as `make run --web-processes` starts them (openclaw_site/web_tier.py)."""

    def __init__(self, env: dict, log_path: Path, *, processes: int = 1):
        self.env = env
        self.log_path = log_path
        self.count = processes
        self.processes: list[subprocess.Popen] = []
        self.url = ""

    def __enter__(self) -> "Daphne":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> "Daphne":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The children keep their own copies of the socket and the log's descriptor.
        with web_tier.listening_socket("127.0.0.1", 0) as listener, open(self.log_path, "ab") as log:
            for _ in range(self.count):
                self.processes.append(
                    spawn(web_tier.daphne_command(listener), self.env, log, pass_fds=(listener.fileno(),))
                )
            self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        if not answers(f"{self.url}/healthz", self.processes, timeout):
            self.stop()
            raise RuntimeError(f"daphne did not start; see {self.log_path}")
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.processes = []
