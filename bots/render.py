"""What the Slack thread says, rendered from database rows (no queries, no network).

Every message is a function of the current state, so a sync that runs late, twice, or after a
burst of events coalesced into one always posts the right thing.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from executions import projects
from executions.integration import summary_line
from executions.models import Conflict, Execution, Task
from executions.result_aggregator import has_bill, has_record, timeline
from executions.states import EXECUTION_DELIVERED, ExecutionStatus, TaskStatus

# Slack's limits: 3000 characters per section text, 40000 per message (we stay far below).
SECTION_LIMIT = 2900
SUMMARY_LIMIT = 3000

EXECUTION_EMOJI = {
    ExecutionStatus.PLANNING: ":thought_balloon:",
    ExecutionStatus.AWAITING_APPROVAL: ":hourglass_flowing_sand:",
    ExecutionStatus.EXECUTING: ":gear:",
    ExecutionStatus.AGGREGATING: ":jigsaw:",
    ExecutionStatus.COMPLETED: ":white_check_mark:",
    ExecutionStatus.PARTIAL: ":large_orange_diamond:",
    ExecutionStatus.FAILED: ":x:",
    ExecutionStatus.CANCELLED: ":no_entry_sign:",
    ExecutionStatus.BUDGET_EXCEEDED: ":money_with_wings:",
}
TASK_EMOJI = {
    TaskStatus.PENDING: ":white_circle:",
    TaskStatus.READY: ":large_blue_circle:",
    TaskStatus.QUEUED: ":large_blue_circle:",
    TaskStatus.RUNNING: ":arrows_counterclockwise:",
    TaskStatus.SUCCEEDED: ":white_check_mark:",
    TaskStatus.FAILED: ":warning:",
    TaskStatus.DEAD: ":x:",
    TaskStatus.BLOCKED: ":no_entry:",
    TaskStatus.CANCELLED: ":heavy_minus_sign:",
}
HEADLINES = {
    ExecutionStatus.COMPLETED: "Project complete",
    ExecutionStatus.PARTIAL: "Partial delivery",
    ExecutionStatus.FAILED: "Delivery failed",
    ExecutionStatus.CANCELLED: "Execution cancelled",
    ExecutionStatus.BUDGET_EXCEEDED: "Stopped at the budget",
}

CANCEL_ACTION = "openclaw_cancel"
APPROVE_ACTION = "openclaw_approve"
REJECT_ACTION = "openclaw_reject"
RETRY_ACTION = "openclaw_retry"
CONSOLE_ACTION = "openclaw_console"


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.text, self.blocks], sort_keys=True).encode()).hexdigest()


def console_url(public_url: str, execution_id: str) -> str:
    return f"{public_url.rstrip('/')}/console/executions/{execution_id}/"


def seconds(value: float | None) -> str:
    value = int(round(value or 0))
    return f"{value}s" if value < 60 else f"{value // 60}m {value % 60:02d}s"


def elapsed_sec(execution: Execution, now: datetime) -> float:
    return ((execution.finished_at or now) - execution.created_at).total_seconds()


def escape(text: str) -> str:
    """Untrusted text (requests, model output) made inert in mrkdwn: no mentions, links or HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def task_line(task: Task, now: datetime) -> str:
    kind = "" if task.kind == "plan" else f" _{task.get_kind_display()}_"
    timing = ""
    if task.started_at:
        timing = f" · {seconds(((task.finished_at or now) - task.started_at).total_seconds())}"
    cost = f" · ${task.cost_usd:.4f}" if task.cost_usd else ""
    return (
        f"{TASK_EMOJI.get(task.status, '')} `{task.key}` {task.pool}{kind}"
        f" — {escape(clip(task.description, 70))}"
        f" · *{task.status}*{timing}{cost}"
    )


def retryable(tasks: list[Task]) -> bool:
    return any(t.status in (TaskStatus.DEAD, TaskStatus.BLOCKED) for t in tasks)


def status_message(execution: Execution, tasks: list[Task], *, now: datetime, public_url: str) -> Message:
    """The one status message of the thread: state, elapsed, cost so far, every task, the buttons."""
    done = sum(1 for t in tasks if t.status == TaskStatus.SUCCEEDED)
    header = (
        f"{EXECUTION_EMOJI.get(execution.status, '')} *OpenClaw* `{execution.pk}` — *{execution.status}*\n"
        f">{escape(clip(' '.join(execution.message.split()), 280))}"
    )
    facts = [
        f"{'Took' if execution.is_terminal else 'Elapsed'} {seconds(elapsed_sec(execution, now))}",
        f"cost so far ${execution.cost_usd:.4f}",
        f"{done}/{len(tasks)} tasks done",
    ]
    if execution.mode:
        facts.append(f"{execution.mode} mode")
    if execution.estimated_duration_sec and not execution.is_terminal:
        facts.append(f"estimate {seconds(execution.estimated_duration_sec)}")
    awaiting = execution.status == ExecutionStatus.AWAITING_APPROVAL
    if awaiting:
        header += (
            "\n*The plan awaits your approval:* nothing runs and nothing is charged until it is approved."
        )
        facts.append(f"fee on approval ${execution.quoted_fee_usd or 0:.2f}")
        if execution.estimated_cost_usd is not None:
            facts.append(f"estimated model cost ${execution.estimated_cost_usd:.4f}")
    rows = [plan_line(t) for t in execution.plan.get("tasks", [])] if awaiting else None
    lines, used = [], 0
    for index, task in enumerate(tasks if rows is None else rows):
        line = task_line(task, now) if rows is None else task
        if used + len(line) > SECTION_LIMIT - 40:
            lines.append(f"…and {len(tasks if rows is None else rows) - index} more in the console")
            break
        lines.append(line)
        used += len(line) + 1
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": header}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    buttons = []
    if awaiting:
        buttons += approval_buttons(execution)
    elif not execution.is_terminal:
        buttons.append(
            {
                "type": "button",
                "action_id": CANCEL_ACTION,
                "value": execution.pk,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Cancel"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Cancel this execution?"},
                    "text": {"type": "mrkdwn", "text": "Running tasks are abandoned."},
                    "confirm": {"type": "plain_text", "text": "Cancel it"},
                    "deny": {"type": "plain_text", "text": "Keep going"},
                },
            }
        )
    elif execution.status in (ExecutionStatus.PARTIAL, ExecutionStatus.FAILED) and retryable(tasks):
        buttons.append(
            {
                "type": "button",
                "action_id": RETRY_ACTION,
                "value": execution.pk,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Retry failed tasks"},
            }
        )
    buttons.append(
        {
            "type": "button",
            "action_id": CONSOLE_ACTION,
            "value": execution.pk,
            "url": console_url(public_url, execution.pk),
            "text": {"type": "plain_text", "text": "Open in console"},
        }
    )
    blocks.append({"type": "actions", "block_id": "openclaw_actions", "elements": buttons})
    text = f"OpenClaw {execution.pk}: {execution.status} ({done}/{len(tasks)} tasks done)"
    return Message(text=text, blocks=blocks)


def plan_line(task: dict) -> str:
    after = f" · after {', '.join(task['blocked_by'])}" if task.get("blocked_by") else ""
    return f":clipboard: `{task['id']}` {task['pool']} — {escape(clip(task['description'], 90))}{after}"


def approval_buttons(execution: Execution) -> list[dict]:
    fee = f"${execution.quoted_fee_usd or 0:.2f}"
    return [
        {
            "type": "button",
            "action_id": APPROVE_ACTION,
            "value": execution.pk,
            "style": "primary",
            "text": {"type": "plain_text", "text": f"Approve ({fee})"},
            "confirm": {
                "title": {"type": "plain_text", "text": "Approve this plan?"},
                "text": {"type": "mrkdwn", "text": f"The fee of {fee} is charged and the work starts."},
                "confirm": {"type": "plain_text", "text": "Approve"},
                "deny": {"type": "plain_text", "text": "Not yet"},
            },
        },
        {
            "type": "button",
            "action_id": REJECT_ACTION,
            "value": execution.pk,
            "style": "danger",
            "text": {"type": "plain_text", "text": "Reject"},
        },
    ]


def milestones(execution: Execution, tasks: list[Task], conflicts: list[Conflict]) -> list[tuple[str, str]]:
    """Thread replies the current state calls for, oldest first, as (idempotency key, text)."""
    found: list[tuple[datetime, str, str]] = []
    for task in tasks:
        if task.status == TaskStatus.DEAD:
            when = task.finished_at or execution.created_at
            found.append(
                (
                    when,
                    f"dead:{task.pk}:{when.isoformat()}",
                    f":x: `{task.key}` ({task.pool}) failed for good after {task.failed_attempts} attempts: "
                    f"{escape(clip(task.error or 'no reason recorded', 300))}",
                )
            )
    for conflict in conflicts:
        between = ", ".join(f"`{key}`" for key in conflict.between)
        found.append(
            (
                conflict.created_at,
                f"conflict:{conflict.pk}:detected",
                f":mag: Conflict detected ({conflict.kind}) between {between}: "
                f"{escape(clip(conflict.description, 400))}",
            )
        )
        if conflict.status in ("resolved", "unresolved"):
            when = conflict.resolved_at or conflict.created_at
            text = (
                f":white_check_mark: Conflict resolved ({conflict.kind}): "
                f"{escape(clip(conflict.resolution or conflict.description, 400))}"
                if conflict.status == "resolved"
                else f":warning: Conflict left unresolved ({conflict.kind}): "
                f"{escape(clip(conflict.description, 400))}"
            )
            found.append((when, f"conflict:{conflict.pk}:{conflict.status}", text))
    if execution.status == ExecutionStatus.PARTIAL and execution.finished_at:
        planned = [t for t in tasks if t.kind == "plan"]
        withheld = {key for conflict in conflicts for key in conflict.withheld_tasks()}
        missing = [
            f"`{t.key}` ({t.status if t.status != TaskStatus.SUCCEEDED else 'unresolved conflict'})"
            for t in planned
            if t.status != TaskStatus.SUCCEEDED or t.key in withheld
        ]
        found.append(
            (
                execution.finished_at,
                f"partial:{execution.finished_at.isoformat()}",
                f":large_orange_diamond: Partial delivery: "
                f"{len(planned) - len(missing)} of {len(planned)} tasks "
                f"delivered; not delivered: {', '.join(missing)}. Refund ${execution.refund_usd:.2f}.",
            )
        )
    return [(key, text) for _, key, text in sorted(found, key=lambda item: item[0])]


def gate_line(execution: Execution) -> str:
    """The integration gate's result, as the final message states it."""
    return summary_line(execution.integration or {})


def summary_key(execution: Execution) -> str | None:
    """One summary per finish (a retried execution that finishes again gets a new one)."""
    if not execution.is_terminal or not execution.finished_at:
        return None
    return f"summary:{execution.finished_at.isoformat()}"


def summary_message(execution: Execution, *, public_url: str) -> Message:
    """The final reply: the synthesis, timeline against serial, cost, refund and the console link."""
    headline = HEADLINES.get(execution.status, execution.status)
    lines = [f"{EXECUTION_EMOJI.get(execution.status, '')} *{headline}* — `{execution.pk}`"]
    if execution.final_response:
        lines.append(clip(markdown_to_mrkdwn(execution.final_response), SUMMARY_LIMIT))
    # An aggregated execution's answer ends with the server's record (timeline, repository, gate)
    # and its bill: the summary repeats none of it.
    recorded = has_record(execution.final_response)
    if execution.duration_sec is not None and not recorded:
        delivered = execution.status in EXECUTION_DELIVERED
        lines.append(f"*Timeline:* {timeline(execution, delivered=delivered)}")
    if not has_bill(execution.final_response):  # else the answer ends with its bill already
        lines.append(
            f"*Cost:* ${execution.cost_usd:.2f} model usage · fee ${execution.fee_usd:.2f}"
            f" · refund ${execution.refund_usd:.2f}"
        )
    gate = gate_line(execution)
    if gate and not recorded:
        lines.append(f"*Integration:* {escape(gate)}")
    project = project_line(execution, public_url) if not recorded else ""
    if project:
        lines.append(project)
    lines.append(f"<{console_url(public_url, execution.pk)}|Open in console>")
    return Message(text="\n".join(lines))


def project_line(execution: Execution, public_url: str) -> str:
    """What the execution changed in its project and how to get it: the diff's size, the clone."""
    if not execution.result_commit:
        return ""
    try:
        _, stats = projects.execution_diff(execution)
    except projects.ProjectError:
        return ""
    clone = f"{public_url.rstrip('/')}/git/{execution.project}.git"
    return (
        f"*Project:* {stats['files_changed']} files changed, +{stats['insertions']} −{stats['deletions']}"
        f" · `git clone {clone}`"
    )


def markdown_to_mrkdwn(text: str) -> str:
    """The synthesis is Markdown; Slack speaks mrkdwn (single-star bold, <url|text> links).

    The text is escaped first, so only the links made here from Markdown links are live."""
    text = escape(text)
    text = re.sub(r"^#{1,6}\s*(.+?)\s*#*$", r"*\1*", text, flags=re.MULTILINE)
    text = re.sub(r"\*\*(.+?)\*\*", r"*\1*", text)
    text = re.sub(r"__(.+?)__", r"_\1_", text)
    text = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r"<\2|\1>", text)
    return re.sub(r"^(\s*)[-*] ", r"\1• ", text, flags=re.MULTILINE)


def status_reply(execution: Execution, tasks: list[Task], *, now: datetime, public_url: str) -> str:
    """`/openclaw status <id>`: a short answer for the requester only."""
    done = sum(1 for t in tasks if t.status == TaskStatus.SUCCEEDED)
    failed = sum(1 for t in tasks if t.status in (TaskStatus.DEAD, TaskStatus.BLOCKED))
    lines = [
        f"{EXECUTION_EMOJI.get(execution.status, '')} `{execution.pk}` — *{execution.status}*",
        f"{'Took' if execution.is_terminal else 'Elapsed'} {seconds(elapsed_sec(execution, now))}"
        f" · {done}/{len(tasks)} tasks done"
        + (f" · {failed} failed" if failed else "")
        + f" · cost ${execution.cost_usd:.4f}"
        + (f" · refund ${execution.refund_usd:.2f}" if execution.refund_usd else ""),
        f"<{console_url(public_url, execution.pk)}|Open in console>",
    ]
    return "\n".join(lines)


def list_reply(executions: list[Execution], *, now: datetime) -> str:
    """`/openclaw list`: the client's latest executions."""
    if not executions:
        return "No executions yet. Start one with `/openclaw <what you need built>`."
    lines = ["*Latest executions*"]
    for execution in executions:
        lines.append(
            f"{EXECUTION_EMOJI.get(execution.status, '')} `{execution.pk}` *{execution.status}* · "
            f"{seconds(elapsed_sec(execution, now))} · ${execution.cost_usd:.4f} · "
            f"{escape(clip(' '.join(execution.message.split()), 60))}"
        )
    return "\n".join(lines)
