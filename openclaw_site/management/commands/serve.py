"""`make run`: the whole system in the foreground, supervised like a process manager would.

Prepares the database and config, starts the embedded Redis when REDIS_URL is unset, then runs
daphne (`--web-processes` of them on one listening socket), the Dramatiq workers (every pool plus
the control queue) and the reaper; restarts a child that dies, and stops them all on Ctrl-C or
SIGTERM.
"""

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
from django.core.management.base import BaseCommand

from executions.api_keys import client_for_key
from executions.models import ApiKey, Client
from openclaw_site import embedded_redis, web_tier
from openclaw_site.child_processes import die_with_parent
from pools import sandbox

DEMO_CLIENT = "local-demo"


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
        children: dict[str, subprocess.Popen] = {}
        env = dict(os.environ)
        redis_process = None
        if "REDIS_URL" not in os.environ:
            socket_path = Path(settings.EMBEDDED_REDIS_SOCKET)
            if not embedded_redis.is_alive(socket_path):
                redis_process = embedded_redis.start(socket_path, data_dir=var / "redis")
            self.stdout.write(f"Embedded Redis on {socket_path}")
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
            if redis_process:
                redis_process.terminate()
                redis_process.wait(timeout=10)
            self.stdout.write("Stopped.")

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
