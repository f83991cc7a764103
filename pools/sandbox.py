"""The sandbox an agent's `run` tool executes commands in: bubblewrap (DESIGN.md, "Agents work in a
loop").

A command runs as `bash -c` with the workspace as its only writable folder (mounted at /workspace,
plus a private /tmp), a read-only /usr, no network (an empty network namespace), its own PID, IPC
and UTS namespaces, an empty environment but for a few variables of its own, no capabilities, and
rlimits on CPU time, address space, processes and file size. A wall-clock timeout kills it, and
every process it started dies with it: they live in a PID namespace whose init is gone. A worker
running as root drops to `nobody` first, because the kernel does not count root's processes
against a process limit. Output is read as it comes and only its tail is kept.

Without bubblewrap nothing runs: `run` raises SandboxUnavailable, whose message is for the model.
"""

import functools
import json
import os
import resource
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings

NOBODY = 65534
INSIDE_WORKSPACE = "/workspace"
INSIDE_PACKAGES = "/opt/sandbox"
MAX_COMMAND_CHARS = 100_000
READ_CHUNK = 65_536


class SandboxUnavailable(Exception):
    """No sandbox on this machine; the message says why, fit for a model to read."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str
    duration_sec: float
    timed_out: bool

    def as_json(self) -> str:
        return json.dumps(asdict(self))


def _bwrap() -> str | None:
    configured = settings.OPENCLAW_SANDBOX_BWRAP
    return configured if configured and os.access(configured, os.X_OK) else None


def packages_dir() -> Path:
    """The sandbox's own Python packages (`python -m openclaw_site.sandbox_env` installs them)."""
    return Path(settings.OPENCLAW_SANDBOX_PACKAGES)


@functools.cache
def availability() -> tuple[bool, str]:
    """(True, what runs commands) or (False, why not); probed once per process."""
    bwrap = _bwrap()
    if bwrap is None:
        return False, "execution is unavailable: bubblewrap (bwrap) is not installed on this worker"
    probe = Path(settings.OPENCLAW_WORKSPACES_DIR) / "sandbox-probe"
    probe.mkdir(parents=True, exist_ok=True)
    probe.chmod(0o777)
    try:
        result = _execute(bwrap, probe, "true", timeout_sec=10, output_limit=2000)
    except OSError as exc:
        return False, f"execution is unavailable: bubblewrap does not start ({exc})"
    if result.exit_code != 0:
        return False, f"execution is unavailable: bubblewrap fails here ({result.output.strip()[:300]})"
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    packages = "" if (packages_dir() / "site").is_dir() else "; sandbox packages not installed (make install)"
    return True, f"{version or 'bubblewrap'}{packages}"


def run(
    workspace: Path,
    command: str,
    *,
    timeout_sec: float,
    output_limit: int = 16_000,
    memory_mb: int = 1024,
    max_processes: int = 256,
    max_file_mb: int = 256,
    cpu_sec: int | None = None,
) -> RunResult:
    """Run `command` with bash in the sandbox, cwd the workspace; never outside a sandbox."""
    available, reason = availability()
    if not available:
        raise SandboxUnavailable(reason)
    if len(command) > MAX_COMMAND_CHARS:
        return RunResult(2, f"command longer than {MAX_COMMAND_CHARS} characters", 0.0, False)
    return _execute(
        _bwrap(),
        Path(workspace),
        command,
        timeout_sec=timeout_sec,
        output_limit=output_limit,
        memory_mb=memory_mb,
        max_processes=max_processes,
        max_file_mb=max_file_mb,
        cpu_sec=cpu_sec,
    )


def _arguments(bwrap: str, workspace: Path, command: str) -> list[str]:
    args = [
        bwrap,
        "--unshare-all",  # user, PID, network, IPC, UTS and cgroup namespaces: no network at all
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            args += ["--ro-bind", str(target), f"/{link}"]
    # Only what programs need of /etc: never passwd's neighbours (shadow), never the host's config.
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "mime.types"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += ["--bind", str(workspace), INSIDE_WORKSPACE]
    packages = packages_dir()
    if packages.is_dir():
        args += ["--ro-bind", str(packages), INSIDE_PACKAGES]
    args += ["--remount-ro", "/", "--chdir", INSIDE_WORKSPACE, "--clearenv"]
    env = {
        "PATH": f"{INSIDE_PACKAGES}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "PYTHONPATH": f"{INSIDE_PACKAGES}/site",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name, value in env.items():
        args += ["--setenv", name, value]
    return [*args, "/bin/bash", "-c", command]


def _limits(memory_mb: int, max_processes: int, max_file_mb: int, cpu_sec: int):
    """The child's credentials and rlimits, set between fork and exec (inherited by everything it starts)."""

    def apply() -> None:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb << 20, max_file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_sec, cpu_sec + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _execute(
    bwrap: str,
    workspace: Path,
    command: str,
    *,
    timeout_sec: float,
    output_limit: int,
    memory_mb: int = 1024,
    max_processes: int = 256,
    max_file_mb: int = 256,
    cpu_sec: int | None = None,
) -> RunResult:
    started = time.monotonic()
    process = subprocess.Popen(
        _arguments(bwrap, workspace, command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={},
        start_new_session=True,
        preexec_fn=_limits(memory_mb, max_processes, max_file_mb, cpu_sec or int(timeout_sec) + 1),
        close_fds=True,
    )
    tail = _Tail(output_limit)
    reader = threading.Thread(target=tail.read_all, args=(process.stdout,), daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout_sec)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
    reader.join(timeout=5)  # the pipe closes once the namespace's last process is gone
    duration = time.monotonic() - started
    output = tail.text()
    if timed_out:
        output += f"\n[killed: the command ran past its {timeout_sec:g}s limit]"
    return RunResult(process.returncode if not timed_out else -9, output, round(duration, 3), timed_out)


def _kill(process: subprocess.Popen) -> None:
    """bubblewrap and the PID namespace under it: its init dying takes every process with it."""
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    process.wait()


class _Tail:
    """Reads a stream to its end, keeping the last `limit` characters and counting the rest."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.chunks: deque[bytes] = deque()
        self.kept = 0
        self.total = 0

    def read_all(self, stream) -> None:
        with stream:
            while chunk := stream.read1(READ_CHUNK) if hasattr(stream, "read1") else stream.read(READ_CHUNK):
                self.total += len(chunk)
                self.chunks.append(chunk)
                self.kept += len(chunk)
                while self.chunks and self.kept - len(self.chunks[0]) >= self.limit * 4:
                    self.kept -= len(self.chunks.popleft())

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", errors="replace")
        if len(text) > self.limit:
            text = text[-self.limit :]
        cut = self.total - len(text.encode("utf-8", errors="replace"))
        if cut > 0:
            return f"[output cut: the first {cut} bytes of {self.total} are not shown]\n" + text
        return text
