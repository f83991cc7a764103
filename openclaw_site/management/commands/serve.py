"""`make run`: the whole system in the foreground, supervised like a process manager would.

Prepares the database and config, starts the embedded Redis when REDIS_URL is unset, then runs
daphne (`--web-processes` of them on one listening socket), the Dramatiq workers (every pool plus
the control queue) and the reaper; restarts a child that dies (the embedded Redis too), and stops
them all on Ctrl-C or SIGTERM. One run at a time per var/: a second one waits for the first to
finish stopping, since the Redis, database and repositories there would be the first one's.
"""

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from executions.api_keys import client_for_key
from executions.models import ApiKey, Client
from openclaw_site import embedded_redis, web_tier
from openclaw_site.child_processes import die_with_parent
from pools import sandbox

DEMO_CLIENT = "local-demo"
RUN_LOCK_WAIT_SEC = 60  # how long a second run waits for the first one to stop


class Command(BaseCommand):
    help = "Run the whole system: daphne, Dramatiq workers, the reaper (and an embedded Redis if needed)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--threads", type=int, default=settings.WORKER_THREADS)
        parser.add_argument("--processes", type=int, default=settings.WORKER_PROCESSES)
        parser.add_argument("--web-processes", type=int, default=settings.WEB_PROCESSES)

    def handle(self, *args, port, host, threads, processes, web_processes, **options):
        var = settings.VAR_DIR
        self.run_lock = self.hold_run_lock(var / "serve.lock")
        children: dict[str, subprocess.Popen] = {}
        env = dict(os.environ)
        redis = None
        if "REDIS_URL" not in os.environ:
            redis = EmbeddedRedis(Path(settings.EMBEDDED_REDIS_SOCKET), var / "redis")
            redis.start()
            self.stdout.write(f"Embedded Redis on {redis.socket_path}")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_config")
        key = self.demo_key(var / "demo_api_key")
        password = self.demo_admin(var / "demo_admin_password")
        url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
        # The address the product gives out (clone URLs, links in Slack): where this run listens.
        env.setdefault("OPENCLAW_PUBLIC_URL", url)
        self.stdout.write(
            self.style.SUCCESS(
                f"\nOpenClaw is starting on {url}\n"
                f"  console:  {url}/console/   (user admin, password {password})\n"
                f"  admin:    {url}/admin/\n"
                f"  API docs: {url}/api/docs\n"
                f"  API key for client {DEMO_CLIENT}:\n{key}\n"
            )
        )
        self.report_sandbox()
        listener = web_tier.listening_socket(host, port)
        commands = {
            **{f"web-{n}": web_tier.daphne_command(listener) for n in range(1, max(1, web_processes) + 1)},
            "workers": [
                sys.executable,
                "manage.py",
                "rundramatiq",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            "reaper": [sys.executable, "manage.py", "reaper"],
        }
        if os.environ.get("SLACK_APP_TOKEN"):
            commands["slackbot"] = [sys.executable, "manage.py", "slackbot"]  # Socket Mode
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        restarts: dict[str, float] = {}
        try:
            for name, cmd in commands.items():
                children[name] = self.start(name, cmd, env, listener)
            while not stopping:
                time.sleep(0.5)
                if redis:
                    self.watch_redis(redis)
                for name, child in list(children.items()):
                    if child.poll() is not None and not stopping:
                        # Restart, but not in a tight loop if it dies at once.
                        if time.monotonic() - restarts.get(name, 0) < 2:
                            time.sleep(2)
                        self.stderr.write(f"{name} exited with {child.returncode}; restarting")
                        restarts[name] = time.monotonic()
                        children[name] = self.start(name, commands[name], env, listener)
        finally:
            self.stdout.write("Stopping…")
            for child in children.values():
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 15
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            listener.close()
            if redis:
                redis.stop()
            self.stdout.write("Stopped.")

    def watch_redis(self, redis: "EmbeddedRedis") -> None:
        try:
            if redis.restart_if_stopped():
                self.stderr.write(f"the embedded Redis had stopped; started again on {redis.socket_path}")
        except RuntimeError as exc:  # tried again on the next round
            self.stderr.write(f"the embedded Redis had stopped and does not start: {exc}")

    def hold_run_lock(self, path: Path):
        """An exclusive lock on var/ for this run's life (the kernel drops it when the process ends,
        however it ends). Held by another run, this one waits up to RUN_LOCK_WAIT_SEC for it."""
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            self.stderr.write(
                f"Another `make run` (pid {holder}) is using {path.parent}; waiting up to"
                f" {RUN_LOCK_WAIT_SEC} s for it to stop…"
            )

            def give_up(*_):
                raise TimeoutError

            previous = signal.signal(signal.SIGALRM, give_up)
            signal.alarm(RUN_LOCK_WAIT_SEC)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except TimeoutError:
                raise CommandError(
                    f"another `make run` (pid {holder}) still uses {path.parent}: stop it first"
                ) from None
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    @staticmethod
    def start(name: str, cmd: list[str], env: dict, listener) -> subprocess.Popen:
        # Only the web processes get the listening socket: a worker holding it would never accept.
        fds = (listener.fileno(),) if name.startswith("web-") else ()
        return subprocess.Popen(cmd, env=env, cwd=settings.BASE_DIR, preexec_fn=die_with_parent, pass_fds=fds)

    def report_sandbox(self) -> None:
        """Whether the agents' `run` tool can execute anything here; without bubblewrap it answers
        every model that execution is unavailable, which an operator should not miss."""
        available, detail = sandbox.availability()
        if available:
            self.stdout.write(f"  sandbox:  {detail}\n")
            return
        line = "!" * 78
        self.stderr.write(
            self.style.WARNING(
                f"{line}\n"
                f"sandbox: unavailable ({detail})\n"
                "  Agents cannot run commands or tests; their `run` tool answers that execution is\n"
                "  unavailable. Install bubblewrap (Debian: apt-get install bubblewrap) and restart.\n"
                f"{line}"
            )
        )

    def demo_key(self, path: Path) -> str:
        """The demo client's key, kept in var/ (mode 600) so every `make run` prints the same one."""
        if path.exists():
            raw = path.read_text().strip()
            if client_for_key(raw):
                return raw
        client, _ = Client.objects.get_or_create(name=DEMO_CLIENT)
        _, raw = ApiKey.issue(client)
        path.write_text(raw + "\n")
        path.chmod(0o600)
        return raw

    def demo_admin(self, path: Path) -> str:
        User = get_user_model()
        if path.exists() and User.objects.filter(username="admin").exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password


class EmbeddedRedis:
    """The embedded Redis of a run: started when none answers on its socket, started again when it
    stops (the workers and web processes reconnect), stopped with the run if this run started it."""

    CHECK_EVERY_SEC = 2.0  # how often one this run did not start is pinged

    def __init__(self, socket_path: Path, data_dir: Path):
        self.socket_path, self.data_dir = socket_path, data_dir
        self.process: subprocess.Popen | None = None
        self.checked = 0.0

    def start(self) -> None:
        if not embedded_redis.is_alive(self.socket_path):
            self.process = embedded_redis.start(self.socket_path, data_dir=self.data_dir)

    def restart_if_stopped(self) -> bool:
        """Start Redis again if it stopped; whether it had to. Ours is watched by its process, one
        found running at the start by a ping every CHECK_EVERY_SEC."""
        if self.process is not None:
            if self.process.poll() is None:
                return False
        else:
            if time.monotonic() - self.checked < self.CHECK_EVERY_SEC:
                return False
            self.checked = time.monotonic()
            if embedded_redis.is_alive(self.socket_path):
                return False
        self.process = embedded_redis.start(self.socket_path, data_dir=self.data_dir)
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
