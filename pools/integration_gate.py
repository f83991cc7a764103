"""The integration gate: a merged project tree compiled and tested as a whole, in the sandbox.

`run_gate(files, timeout_sec=…)` writes the tree to a fresh workspace and runs one script in the
sandbox (`pools.sandbox`): `python3 -m compileall -q .` when there is Python, `python3 -m pytest -q`
in each folder holding Python tests (a test's folder is its project: `backend/tests/test_x.py` runs
from `backend/`, as its imports expect; tests at the top run from the top), and `npm test` in each
folder whose package.json has a test script, when node is installed. Every step runs even when an
earlier one fails, so the output shows all that fails. Before that, every file of the tree is
parsed for its type (the verifiers' syntax checks) and the tree's paths are checked for clashes,
in this process. pytest's "no tests collected" (exit 5) is not a failure.

The result is the execution's `integration` object: {"ran", "command", "exit_code", "passed",
"failed", "output_tail", "ok", "reason", "duration_sec", "steps"}. Without a sandbox nothing runs:
`ran` is false and `reason` says why.
"""

import json
import re
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from . import sandbox
from .agent_tools import PYTEST_COUNTS, Workspace
from .verifiers.paths import tree_clashes
from .verifiers.syntax import parse_check

OUTPUT_TAIL = 4000
NPM_DEFAULT_TEST = 'echo "Error: no test specified" && exit 1'
SKIPPED = ("node_modules/", ".venv/", "__pycache__/")
PYTEST_SUMMARY = re.compile(r"^=*\s*(.*?)\s+in\s+[\d.]+s\b.*$")
NO_TESTS_COLLECTED = 5


@dataclass
class GateResult:
    ran: bool
    command: str
    exit_code: int | None = None
    passed: int = 0
    failed: int = 0
    output_tail: str = ""
    ok: bool = False
    reason: str = ""
    duration_sec: float = 0.0
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def is_python_test(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def test_root(path: str) -> str:
    """The folder a Python test runs from: its top folder, unless that is the tests folder itself."""
    parts = PurePosixPath(path).parts
    if len(parts) > 1 and parts[0] not in ("tests", "test"):
        return parts[0]
    return "."


def npm_roots(files: dict[str, str]) -> list[str]:
    roots = []
    for path, content in files.items():
        if PurePosixPath(path).name != "package.json" or path.startswith(SKIPPED) or "/node_modules/" in path:
            continue
        try:
            script = (json.loads(content).get("scripts") or {}).get("test")
        except (ValueError, AttributeError):
            continue
        if isinstance(script, str) and script.strip() and script.strip() != NPM_DEFAULT_TEST:
            roots.append(str(PurePosixPath(path).parent))
    return sorted(roots)


def plan(files: dict[str, str], *, node: bool | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """The gate's steps (a label and its shell line) and notes on what it leaves out."""
    node = shutil.which("node") is not None if node is None else node
    steps: list[tuple[str, str]] = []
    notes: list[str] = []
    if any(p.endswith(".py") for p in files):
        steps.append(("compile", "python3 -m compileall -q -x '(^|/)(node_modules|\\.venv)/' ."))
    roots = sorted({test_root(p) for p in files if is_python_test(p) and not p.startswith(SKIPPED)})
    for root in roots:
        inside = "" if root == "." else f"cd {shlex.quote(root)} && "
        steps.append((f"pytest {root}", f"{inside}python3 -m pytest -q"))
    for root in npm_roots(files):
        if node:
            inside = "" if root == "." else f"cd {shlex.quote(root)} && "
            steps.append((f"npm test {root}", f"{inside}npm test --silent"))
        else:
            notes.append(f"{root}/package.json has a test script, but node is not installed: not run")
    return steps, notes


def script(steps: list[tuple[str, str]]) -> str:
    lines = ["status=0"]
    for label, line in steps:
        check = "[ $rc -eq 0 ] || [ $rc -eq 5 ]" if label.startswith("pytest") else "[ $rc -eq 0 ]"
        lines.append(f"echo '::gate:: {label}'; ( {line} ); rc=$?; {check} || status=1")
    lines.append("exit $status")
    return "\n".join(lines)


def shown_command(steps: list[tuple[str, str]]) -> str:
    """The steps as one line a user can paste in the project's root: a step that changes
    directory, unless it is the last, runs in a subshell of its own (as the script runs each)."""
    return " && ".join(
        f"({line})" if line.startswith("cd ") and i < len(steps) - 1 else line
        for i, (_, line) in enumerate(steps)
    )


def counts(output: str) -> tuple[int, int]:
    """Tests passed and failed, summed over every pytest summary line of the output."""
    passed = failed = 0
    for line in output.splitlines():
        match = PYTEST_SUMMARY.match(line.strip())
        if not match or not PYTEST_COUNTS.search(match.group(1)):
            continue
        for number, word in PYTEST_COUNTS.findall(match.group(1)):
            if word == "passed":
                passed += int(number)
            else:
                failed += int(number)
    return passed, failed


def syntax_problems(files: dict[str, str]) -> list[str]:
    problems = []
    for path in sorted(files):
        finding = parse_check(path, files[path])
        if finding is not None and finding.severity in ("critical", "high"):
            problems.append(f"{path}:{finding.line or ''} {finding.title}")
    problems += [f"{a} and {b} cannot both exist in one checkout" for a, b in tree_clashes(sorted(files))]
    return problems


def run_gate(
    files: dict[str, str], *, timeout_sec: float, workspaces: Path | None = None, node: bool | None = None
) -> GateResult:
    started = time.monotonic()
    steps, notes = plan(files, node=node)
    command = shown_command(steps)
    problems = syntax_problems(files)
    header = "\n".join([*(f"syntax: {p}" for p in problems), *notes])
    if not steps:
        return GateResult(
            ran=False,
            command="",
            ok=not problems,
            reason="nothing to run: no Python code and no test script",
            output_tail=header[-OUTPUT_TAIL:],
            duration_sec=round(time.monotonic() - started, 3),
        )
    ok, reason = sandbox.availability()
    if not ok:
        return GateResult(
            ran=False,
            command=command,
            ok=not problems,
            reason=f"the sandbox is unavailable: {reason}",
            output_tail=header[-OUTPUT_TAIL:],
            steps=[label for label, _ in steps],
            duration_sec=round(time.monotonic() - started, 3),
        )
    with Workspace(files, parent=workspaces) as workspace:
        try:
            result = sandbox.run(
                workspace.root, script(steps), timeout_sec=timeout_sec, output_limit=OUTPUT_TAIL * 4
            )
        except (sandbox.SandboxUnavailable, ValueError) as exc:
            # No sandbox, or one that cannot reach the workspaces folder: not run, saying why.
            return GateResult(
                ran=False, command=command, reason=str(exc), steps=[label for label, _ in steps]
            )
    output = result.output.replace("::gate:: ", "$ ")
    if result.timed_out:
        output += f"\n(the gate timed out after {timeout_sec:.0f}s)"
    if header:
        output = header + "\n" + output
    passed, failed = counts(result.output)
    return GateResult(
        ran=True,
        command=command,
        exit_code=result.exit_code,
        passed=passed,
        failed=failed,
        output_tail=output[-OUTPUT_TAIL:],
        ok=result.exit_code == 0 and not problems and not result.timed_out,
        reason="" if result.exit_code == 0 else "the gate failed",
        duration_sec=round(time.monotonic() - started, 3),
        steps=[label for label, _ in steps],
    )


PATH_MENTION = re.compile(
    r"(?:^|[\s'\"(])(?:\./|/workspace/)?([\w.\-/]+\.(?:py|js|ts|tsx|jsx|mjs|cjs|sql))\b"
)


def mentioned_paths(output: str, files: dict[str, str], roots: list[str]) -> list[str]:
    """The tree's files the output names, in order of mention (a path relative to a test root counts)."""
    found: list[str] = []
    for match in PATH_MENTION.finditer(output):
        raw = match.group(1)
        for candidate in [raw, *(f"{root}/{raw}" for root in roots if root != ".")]:
            if candidate in files:
                found.append(candidate)
                break
    return found


FAILED_TEST = re.compile(r"^(?:FAILED|ERROR)\s+([\w.\-/]+\.py)")


def failing_tests(output: str) -> list[str]:
    return [m.group(1) for line in output.splitlines() if (m := FAILED_TEST.match(line.strip()))]
