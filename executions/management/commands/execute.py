"""`manage.py execute "Build …" [--mode …] [--wait]`: start an execution and follow it live."""

import time
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from executions import services
from executions.models import Client, Execution, Task
from executions.states import TaskStatus

STATE_STYLE = {
    "pending": "dim",
    "ready": "cyan",
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "dead": "bold red",
    "blocked": "magenta",
    "cancelled": "dim",
}


class Command(BaseCommand):
    help = (
        "Start an execution for a client and, with --wait, show a live progress bar per task and the summary."
    )

    def add_arguments(self, parser):
        parser.add_argument("message")
        parser.add_argument("--mode", choices=["auto", "parallel", "serial"], default="auto")
        parser.add_argument(
            "--client", default="local-demo", help="client name (default: the make run demo client)"
        )
        parser.add_argument("--project", default="")
        parser.add_argument("--budget", type=float, default=None)
        parser.add_argument("--wait", action="store_true", help="follow the execution until it ends")
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args, message, mode, client, project, budget, wait, timeout, **options):
        if not message.strip():
            raise CommandError("the message must not be empty")
        owner, _ = Client.objects.get_or_create(name=client)
        execution = services.execution_create(
            client=owner,
            message=message.strip(),
            session_key="cli",
            project=project,
            mode=mode,
            budget_usd=Decimal(str(budget)) if budget is not None else None,
        )
        console = Console()
        console.print(f"Execution [bold]{execution.pk}[/bold] started ({mode}).")
        if not wait:
            return
        execution = self.follow(console, execution.pk, timeout)
        self.summary(console, execution)

    def follow(self, console: Console, execution_id: str, timeout: float) -> Execution:
        deadline = time.monotonic() + timeout
        bars: dict[str, int] = {}
        columns = [
            TextColumn("{task.fields[key]:<10} {task.fields[pool]:<9}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console, transient=False) as progress:
            planning = progress.add_task("", total=None, key="PM", pool="planning", state="planning…")
            while time.monotonic() < deadline:
                execution = Execution.objects.get(pk=execution_id)
                for task in Task.objects.filter(execution_id=execution_id).order_by("id"):
                    if task.key not in bars:
                        bars[task.key] = progress.add_task(
                            "", total=100, key=task.key, pool=task.pool, state=""
                        )
                    done = 100 if task.status == TaskStatus.SUCCEEDED else task.progress
                    style = STATE_STYLE.get(task.status, "")
                    label = f"[{style}]{task.status}[/{style}]" + (
                        f" (attempt {task.failed_attempts + 1})"
                        if task.failed_attempts and not task.is_terminal
                        else ""
                    )
                    progress.update(bars[task.key], completed=done, state=label)
                if execution.status != "planning":
                    progress.update(planning, total=1, completed=1, state=execution.status)
                if execution.is_terminal:
                    return execution
                time.sleep(0.25)
        raise CommandError(
            f"{execution_id} did not finish within {timeout:g}s (is `make run` running the workers?)"
        )

    def summary(self, console: Console, execution: Execution) -> None:
        duration = execution.duration_sec or 0
        serial = execution.serial_estimate_sec or 0
        saved = f" ({1 - duration / serial:.0%} faster)" if serial and duration < serial else ""
        console.print()
        console.print(execution.final_response or "(no response)")
        console.print()
        console.print(f"Timeline: {duration:.1f}s ({execution.mode}) vs serial estimate {serial:.1f}s{saved}")
        console.print(
            f"Cost: ${execution.cost_usd:.2f} model usage, fee ${execution.fee_usd:.2f}, "
            f"refund ${execution.refund_usd:.2f}"
        )
        console.print(f"Status: [bold]{execution.status}[/bold]")
