"""The tools an agent works with (DESIGN.md, "Agents work in a loop"): its workspace's files and a
sandboxed shell.

The workspace is a folder of this worker's disk holding what the task starts from (its
dependencies' files) and what the attempt writes. Every tool answers with text, and a bad call
(unknown tool, missing or wrong-typed argument, a path outside the workspace, a command too long)
is an error result for the model to read, never an exception of the worker. Commands run only in
the sandbox (`pools.sandbox`); the worker itself only reads and writes plain files, never through
a symbolic link a command may have left behind.
"""

import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox, storable
from .llm_types import Tool, ToolCall, ToolResult
from .replies import MAX_FILE_CHARS, MAX_FILES, ReplyError, parse_findings
from .scratch import process_dir
from .verifiers.paths import path_problem

READ_LIMIT = 20_000  # characters of a file shown to the model; the rest is cut, saying so
LIST_LIMIT = 500  # files listed
COMMAND_LIMIT = 10_000  # characters of a command
RUN_OUTPUT_LIMIT = 16_000  # characters of a command's output (its tail) shown to the model
SKIPPED_FOLDERS = {".git", "__pycache__", ".pytest_cache", "node_modules", ".venv"}

TOOLS = (
    Tool(
        "list_files",
        "List the workspace's files, one `path  size` per line.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    ),
    Tool(
        "read_file",
        "Read a file of the workspace (long files are cut, saying so).",
        {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "relative to the workspace"}},
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
    Tool(
        "write_file",
        "Create or replace a file of the workspace. What you write is your output.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "relative to the workspace, e.g. src/app.py"},
                "content": {"type": "string"},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    ),
    Tool(
        "run",
        "Run a shell command (bash -c) in a sandbox whose working folder is the workspace: no network, "
        "python3 with pytest available. Returns JSON {exit_code, output, duration_sec, timed_out}.",
        {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
            "additionalProperties": False,
        },
    ),
    Tool(
        "finish",
        "End your work: a summary of what you did and any findings.",
        {
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "findings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "severity": {"enum": ["critical", "high", "medium", "low", "info"]},
                            "title": {"type": "string"},
                            "file": {"type": ["string", "null"]},
                            "line": {"type": ["integer", "null"]},
                            "recommendation": {"type": "string"},
                        },
                        "required": ["severity", "title"],
                    },
                },
            },
            "required": ["summary"],
            "additionalProperties": False,
        },
    ),
)
TOOL_NAMES = tuple(tool.name for tool in TOOLS)

PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|error|errors)\b")


class ToolError(Exception):
    """A tool call that cannot be carried out; the message is the model's answer."""


@dataclass
class Finish:
    summary: str
    findings: list[dict]


@dataclass
class CommandRun:
    command: str
    exit_code: int | None  # None: the sandbox is unavailable
    duration_sec: float
    timed_out: bool
    tests: dict | None = None  # {"passed", "failed"} when the output ends with a pytest summary

    def as_dict(self) -> dict:
        return {
            "command": self.command[:500],
            "exit_code": self.exit_code,
            "duration_sec": self.duration_sec,
            "timed_out": self.timed_out,
            **({"tests": self.tests} if self.tests is not None else {}),
        }


def pytest_counts(output: str) -> dict | None:
    """{"passed", "failed"} from pytest's summary line, when the output has one."""
    lines = [line for line in output.splitlines() if PYTEST_COUNTS.search(line)]
    if not lines:
        return None
    counts = {"passed": 0, "failed": 0}
    for number, word in PYTEST_COUNTS.findall(lines[-1]):
        counts["passed" if word == "passed" else "failed"] += int(number)
    return counts


class Workspace:
    """A private folder with the files the task starts from; remembers what the attempt wrote.
    Under `parent`, it is made in this process's scratch folder (pools.scratch), which a worker
    booting after this one was killed removes."""

    def __init__(self, files: dict[str, str], parent: Path | None = None):
        folder = process_dir(parent) if parent is not None else None
        self.root = Path(tempfile.mkdtemp(prefix="ws-", dir=folder)).resolve()
        # A worker running as root runs the sandbox as `nobody` (pools.sandbox), which must be able to
        # write everywhere in the workspace: folders and files are made writable by all.
        self.root.chmod(0o777)
        self.written: dict[str, None] = {}  # paths in the order first written
        for path, content in files.items():
            if path_problem(path) is None:
                self._write(path, content, record=False)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------- paths

    def _inside(self, path: object) -> Path:
        """The file a model's path names, refused unless it is plainly inside the workspace: no
        absolute path, no `..`, and no symbolic link anywhere along it (a command may leave one
        pointing at the worker's own files)."""
        problem = path_problem(path)
        if problem:
            raise ToolError(f"refused path: {problem}")
        target = self.root
        for part in str(path).split("/"):
            target = target / part
            if target.is_symlink():
                raise ToolError(f"refused path: {path} goes through a symbolic link")
        return target

    # ----------------------------------------------------------------- tools

    def list_files(self) -> str:
        lines = []
        for folder, dirs, names in os.walk(self.root):  # os.walk does not follow links to folders
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
            for name in sorted(names):
                full = Path(folder) / name
                info = full.lstat()
                if stat.S_ISREG(info.st_mode):
                    lines.append(f"{full.relative_to(self.root).as_posix()}  {info.st_size}")
        if not lines:
            return "(the workspace is empty)"
        shown = lines[:LIST_LIMIT]
        if len(lines) > LIST_LIMIT:
            shown.append(f"… {len(lines) - LIST_LIMIT} more files not listed")
        return "\n".join(shown)

    def read_file(self, path: object) -> str:
        data, size = self._read_regular(path, READ_LIMIT * 4 + 1)
        text = storable.decode(data)
        if len(text) > READ_LIMIT or size > len(data):
            return (
                text[:READ_LIMIT]
                + f"\n… [cut: the file has {size} bytes; the first {READ_LIMIT} characters shown]"
            )
        return text

    def _read_regular(self, path: object, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes of a regular file of the workspace and its size; never through a link,
        never a FIFO or a device a command may have left."""
        target = self._inside(path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ToolError(f"no such file: {path}") from None
        except OSError as exc:
            raise ToolError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"not a regular file: {path}")
            return handle.read(limit), info.st_size

    def write_file(self, path: object, content: object) -> str:
        if not isinstance(content, str):
            raise ToolError('"content" must be a string')
        if len(content) > MAX_FILE_CHARS:
            raise ToolError(f"file larger than {MAX_FILE_CHARS} characters")
        if path not in self.written and len(self.written) >= MAX_FILES:
            raise ToolError(f"an attempt writes at most {MAX_FILES} files")
        self._write(str(path), content)
        return "ok"

    def _write(self, path: str, content: str, *, record: bool = True) -> None:
        target = self._inside(path)
        try:
            folder = self.root
            for part in str(path).split("/")[:-1]:
                folder = folder / part
                if not folder.is_dir():
                    folder.mkdir()
                    folder.chmod(0o777)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise ToolError(f"cannot write {path}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(fd, 0o666)
            handle.write(content)
        if record:
            self.written.setdefault(path, None)

    def output_files(self) -> list[dict]:
        """What the attempt wrote, as it is on disk now (a command may have changed or removed it)."""
        files = []
        for path in self.written:
            try:
                text = self.read_whole(path)
            except ToolError:
                continue
            files.append({"path": path, "content": text})
        return files

    def read_whole(self, path: str) -> str:
        data, _ = self._read_regular(path, MAX_FILE_CHARS * 4 + 1)
        return storable.decode(data)[:MAX_FILE_CHARS]


@dataclass
class Toolbox:
    """Carries out one attempt's tool calls against its workspace."""

    workspace: Workspace
    run_timeout_sec: float
    runs: list[CommandRun] = field(default_factory=list)

    def call(self, call: ToolCall, *, seconds_left: float) -> ToolResult | Finish:
        try:
            if call.name not in TOOL_NAMES:
                raise ToolError(f"unknown tool {call.name!r}; the tools are {', '.join(TOOL_NAMES)}")
            if call.arguments is None:
                raise ToolError(f"the arguments of {call.name} are not a JSON object: {call.raw[:200]!r}")
            args = call.arguments
            if call.name == "finish":
                return self._finish(args)
            if call.name == "list_files":
                content = self.workspace.list_files()
            elif call.name == "read_file":
                content = self.workspace.read_file(_string(args, "path"))
            elif call.name == "write_file":
                content = self.workspace.write_file(_string(args, "path"), _string(args, "content"))
            else:
                content = self._run(_string(args, "command"), seconds_left)
        except ToolError as exc:
            return ToolResult(call.id, call.name, f"error: {exc}", is_error=True)
        return ToolResult(call.id, call.name, content)

    def _finish(self, args: dict) -> Finish:
        summary = args.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise ToolError('finish needs a non-empty string "summary"')
        try:
            findings = parse_findings(args.get("findings") or [])
        except ReplyError as exc:
            raise ToolError(str(exc)) from None
        return Finish(summary.strip()[:4000], findings)

    def _run(self, command: str, seconds_left: float) -> str:
        if len(command) > COMMAND_LIMIT:
            raise ToolError(f"command longer than {COMMAND_LIMIT} characters; write a script file and run it")
        timeout = min(self.run_timeout_sec, seconds_left)
        if timeout < 1:
            raise ToolError("no time left in this attempt to run a command")
        try:
            result = sandbox.run(
                self.workspace.root, command, timeout_sec=timeout, output_limit=RUN_OUTPUT_LIMIT
            )
        except sandbox.SandboxUnavailable as exc:
            self.runs.append(CommandRun(command, None, 0.0, False))
            raise ToolError(f"{exc}; finish without running commands") from None
        self.runs.append(
            CommandRun(
                command,
                result.exit_code,
                round(result.duration_sec, 3),
                result.timed_out,
                pytest_counts(result.output),
            )
        )
        return result.as_json()

    def tests(self) -> dict | None:
        """The pytest counts of the last command that ran tests."""
        for run in reversed(self.runs):
            if run.tests is not None:
                return run.tests
        return None


def _string(args: dict, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f'argument "{name}" must be a string')
    return value
