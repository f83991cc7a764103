"""`manage.py execute "Build …" [--mode …] [--approve] [--wait]`: start an execution and follow it live.

With --approve the plan waits for approval: the command prints it with its estimates and fee and
asks before anything runs (y starts it, anything else rejects it at no fee). With --project the
request follows up on that project's latest execution."""

import time
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from executions import approval, services
from executions.models import Client, Execution, Task
from executions.states import ApprovalMode, ExecutionStatus, TaskStatus

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
        parser.add_argument(
            "--project", default="", help="project name; a follow-up of the project's latest execution"
        )
        parser.add_argument(
            "--approve",
            action="store_true",
            help="show the plan, its estimates and fee, and ask before it runs (y/N)",
        )
        parser.add_argument("--budget", type=float, default=None)
        parser.add_argument("--wait", action="store_true", help="follow the execution until it ends")
        parser.add_argument("--timeout", type=float, default=3600)

    def handle(self, *args, message, mode, client, project, budget, wait, timeout, approve, **options):
        if not message.strip():
            raise CommandError("the message must not be empty")
        owner, _ = Client.objects.get_or_create(name=client)
        follows = (
            Execution.objects.filter(client=owner, project=project).order_by("-created_at").first()
            if project
            else None
        )
        try:
            execution = services.execution_create(
                client=owner,
                message=message.strip(),
                session_key="cli",
                project=project,
                mode=mode,
                budget_usd=Decimal(str(budget)) if budget is not None else None,
                approval=ApprovalMode.PLAN if approve else None,
                follows=follows,
            )
        except services.RequestRefused as exc:
            raise CommandError(str(exc)) from None
        console = Console()
        following = f", following up {follows.pk}" if follows else ""
        console.print(f"Execution [bold]{execution.pk}[/bold] started ({mode}{following}).")
        if execution.approval == ApprovalMode.PLAN and not self.decide(console, execution.pk, timeout):
            return
        if not wait:
            return
        execution = self.follow(console, execution.pk, timeout)
        self.summary(console, execution)

    def decide(self, console: Console, execution_id: str, timeout: float) -> bool:
        """Wait for the plan, show it with its estimates and fee, and ask; True once approved."""
        deadline = time.monotonic() + timeout
        execution = Execution.objects.get(pk=execution_id)
        while execution.status == ExecutionStatus.PLANNING:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"{execution_id} was not planned within {timeout:g}s (are the workers running?)"
                )
            time.sleep(0.25)
            execution.refresh_from_db()
        if execution.status != ExecutionStatus.AWAITING_APPROVAL:
            console.print(
                f"The execution is {execution.status}: {execution.final_response or execution.error}"
            )
            return execution.status == ExecutionStatus.EXECUTING
        console.print(f"Plan ({execution.mode} mode, {execution.plan_source} plan):")
        expected = execution.plan.get("expected", {})
        for task in execution.plan.get("tasks", []):
            after = f"  after {', '.join(task['blocked_by'])}" if task["blocked_by"] else ""
            seconds = expected.get(task["id"], 0)
            console.print(
                f"  {task['id']:<10} {task['pool']:<9} ~{seconds:.0f}s  {task['description']}{after}",
                markup=False,
            )
        console.print(
            f"Estimated duration {execution.estimated_duration_sec or 0:.0f}s "
            f"(serial {execution.serial_estimate_sec or 0:.0f}s), "
            f"estimated model cost ${execution.estimated_cost_usd or 0:.4f}, "
            f"fee ${execution.quoted_fee_usd or 0:.2f} (charged on approval)."
        )
        try:
            answer = input(f"Approve and pay ${execution.quoted_fee_usd or 0:.2f}? [y/N] ")
        except EOFError:
            answer = ""
        try:
            if answer.strip().lower() in ("y", "yes"):
                approval.execution_approve(execution, by="cli")
                console.print("Approved: the tasks start now.")
                return True
            approval.execution_reject(execution, by="cli")
        except approval.ApprovalRefused as exc:
            raise CommandError(exc.reason) from None
        console.print("Rejected: the execution is cancelled; nothing was charged but the planning.")
        return False

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
