"""An agent's attempt as a conversation: the model calls tools until it finishes (DESIGN.md, "Agents
work in a loop").

Each turn is one model call. Before every call the caller's `before_turn` may stop the loop
(cancelled, out of budget); after every call `after_turn` gets the turn, to bill and keep it. A
reply without tool calls is read with the single-reply contract, so models without tool support
still work. The loop ends with the attempt's reply (summary, files written, findings), or raises:
`LLMError` from the model, `ReplyError` for a reply it cannot use, `LoopStopped` from the caller,
`TurnsExhausted` when `max_turns` pass without a finish.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import llm
from .agent_tools import TOOLS, CommandRun, Finish, Toolbox, Workspace
from .llm_types import Completion, LLMRequest, Message, ModelSpec, ProgressCallback, ToolResult
from .replies import AgentReply, ReplyError, parse_agent_reply

TRANSCRIPT_CHARS = 4000  # of each tool result and argument kept in the transcript
NO_TOOL_NUDGE = (
    "Your reply had no tool call and is not the JSON reply of the contract ({error}). "
    "Call a tool, or call finish when you are done."
)


class LoopStopped(Exception):
    """The caller stopped the loop before a model call; `reason` says why (a StopReason value)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TurnsExhausted(Exception):
    """The pool's max_turns passed without a finish: a failed attempt."""


@dataclass
class Turn:
    """One model call and what came of it, as kept in the attempt's transcript."""

    number: int
    completion: Completion
    duration_sec: float
    final: bool
    tool_calls: list[dict] = field(default_factory=list)
    tool_results: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.completion.text


@dataclass
class LoopResult:
    reply: AgentReply
    turns: int
    runs: list[CommandRun]
    tests: dict | None


@dataclass
class Hooks:
    before_turn: Callable[[int], None]  # may raise LoopStopped
    after_turn: Callable[[Turn], None]  # bills and keeps the turn; `final` ones end the loop
    on_progress: ProgressCallback | None = None


def _cut(text: str) -> str:
    if len(text) <= TRANSCRIPT_CHARS:
        return text
    return text[:TRANSCRIPT_CHARS] + f"\n… [{len(text) - TRANSCRIPT_CHARS} more characters]"


def run_loop(
    spec: ModelSpec,
    request: LLMRequest,
    workspace: Workspace,
    *,
    max_turns: int,
    deadline: float,
    run_timeout_sec: float,
    hooks: Hooks,
) -> LoopResult:
    """Run the conversation for `request` (its prompt the task) until the model finishes."""
    toolbox = Toolbox(workspace, run_timeout_sec)
    request = replace(request, tools=TOOLS)
    history: list[Message] = []
    nudged = False
    for number in range(1, max_turns + 1):
        hooks.before_turn(number)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise llm.LLMTimeout(f"the attempt's {request.timeout:g}s passed after {number - 1} turns")
        started = time.monotonic()
        completion = llm.complete(
            spec,
            replace(request, history=tuple(history), timeout=remaining),
            on_progress=_turn_progress(hooks.on_progress, number, max_turns),
        )
        duration = time.monotonic() - started
        if not completion.tool_calls:
            turn = Turn(number, completion, duration, final=True)
            try:
                reply = parse_agent_reply(completion.text)
            except ReplyError as exc:
                if nudged or number == max_turns:
                    hooks.after_turn(turn)
                    raise
                nudged = True
                turn.final = False
                hooks.after_turn(turn)
                history += [
                    Message("assistant", completion.text),
                    Message("user", NO_TOOL_NUDGE.format(error=exc)),
                ]
                continue
            hooks.after_turn(turn)
            # The reply's files as given (the verifiers judge their paths), over what tools wrote.
            given = {item["path"] for item in reply.files}
            files = [f for f in workspace.output_files() if f["path"] not in given] + reply.files
            return LoopResult(
                AgentReply(reply.summary, files, reply.findings),
                number,
                toolbox.runs,
                toolbox.tests(),
            )
        results: list[ToolResult] = []
        finish: Finish | None = None
        for call in completion.tool_calls:
            if finish is not None:
                results.append(ToolResult(call.id, call.name, "error: called after finish", is_error=True))
                continue
            outcome = toolbox.call(call, seconds_left=deadline - time.monotonic())
            if isinstance(outcome, Finish):
                finish = outcome
                results.append(ToolResult(call.id, call.name, "finished"))
            else:
                results.append(outcome)
        turn = Turn(
            number,
            completion,
            time.monotonic() - started,
            final=finish is not None,
            tool_calls=[
                {
                    "id": c.id,
                    "name": c.name,
                    "arguments": c.arguments,
                    **({"raw": _cut(c.raw)} if c.arguments is None else {}),
                }
                for c in completion.tool_calls
            ],
            tool_results=[
                {"id": r.call_id, "name": r.name, "content": _cut(r.content), "is_error": r.is_error}
                for r in results
            ],
        )
        # Arguments are kept whole only when small: a written file's content is in the output.
        for item in turn.tool_calls:
            if item["arguments"] is not None and len(str(item["arguments"])) > TRANSCRIPT_CHARS:
                item["arguments"] = {
                    k: _cut(v) if isinstance(v, str) else v for k, v in item["arguments"].items()
                }
        hooks.after_turn(turn)
        if finish is not None:
            return LoopResult(
                AgentReply(finish.summary, workspace.output_files(), finish.findings),
                number,
                toolbox.runs,
                toolbox.tests(),
            )
        history += [
            Message("assistant", completion.text, tool_calls=completion.tool_calls),
            Message("tool", tool_results=tuple(results)),
        ]
    raise TurnsExhausted(f"max_turns ({max_turns}) reached without finish")


def _turn_progress(callback: ProgressCallback | None, number: int, max_turns: int) -> ProgressCallback | None:
    """Progress across turns: most attempts finish well before max_turns, so turns are counted
    against a few expected ones, never going backwards (the keeper keeps the maximum)."""
    if callback is None:
        return None
    expected = max(number + 1, min(max_turns, 4))

    def report(fraction: float) -> None:
        callback(min(0.99, (number - 1 + fraction) / expected))

    return report
