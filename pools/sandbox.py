"""The sandbox that runs model-written shell commands (the agents' `run` tool): bubblewrap, or nothing.

`run(workspace, command, timeout_sec=…)` runs `bash -c command` in a bubblewrap sandbox and
returns a `RunResult`. Without a working bubblewrap it raises `SandboxUnavailable`; no command is
ever run any other way. `availability()` says once per process whether it works, and why not.

What the command sees:
- the workspace at /workspace (its cwd), the only writable place besides a private /tmp and
  /dev/shm, tmpfs of bounded size; the workspace's `.git`, if any, read-only;
- /usr (with the /bin, /lib… links of a merged /usr) and a few files of /etc (the loader's cache,
  Debian's alternatives) read-only, plus its own passwd, group, hosts and nsswitch.conf; not the
  host's /etc (no /etc/shadow), not /root, not /home, not the project's checkout or its var/;
- the sandbox's own Python environment (pools/sandbox_python.py) at /opt/sandbox-venv, first on
  PATH: `python`, `python3`, `pytest` and config's `sandbox.packages`;
- only `ENVIRONMENT`'s variables: none of the worker's (no API keys, DATABASE_URL, SECRET_KEY);
- no network: a network namespace of its own with only its own loopback; no IPC, PID, UTS or
  cgroup namespace of the host; a new session (no terminal to inject input into);
- no privileges: uid `SANDBOX_UID` in a user namespace with no capabilities, no_new_privs, and no
  further user namespaces (`--disable-userns`).

Why bwrap is started as the host's uid 65534 when the worker runs as root: in a user namespace
the command's uid is still the host uid that started bwrap. As root that would be uid 0, which
the kernel exempts from RLIMIT_NPROC (a fork bomb would be unbounded) and which owns every root
file it can see. As 65534 it is an ordinary user: the process limit holds (counted per sandbox,
in its own user namespace), and a root-only file is unreadable even if it were mounted. So the
worker hands the workspace to that user before each run (its files and folders chowned, the top
folder given to its group, so git run by the worker still owns the repository), and the
workspace's parent folders must be searchable by others (o+x), like var/.

Limits: CPU seconds, address space, processes and file size are set by `ulimit` in the sandbox's
first shell, which then execs `bash -c command`; a wall-clock deadline kills bwrap, whose PID
namespace dies with it, so every child goes, daemonized or not; `run` returns once they have.
Output is stdout and stderr interleaved, of which only the last `output_limit` bytes are kept while
reading. A command longer than `ARGV_MAX_BYTES` is passed as a file instead of an argument (the
kernel caps one argument at 128 KiB).
"""

import functools
import json
import math
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings

from . import storable
from .sandbox_python import MOUNT as VENV_MOUNT

WORKSPACE = "/workspace"
SANDBOX_UID = SANDBOX_GID = 1000  # inside the sandbox
HOST_UID = HOST_GID = 65534  # what it is on the host when the worker runs as root ("nobody")
ARGV_MAX_BYTES = 100_000
COMMAND_FILE = "/run/openclaw/command"
TIMED_OUT_EXIT_CODE = 124  # as timeout(1)
KILL_GRACE_SEC = 5.0  # after the kill, for the pipes to close (the PID namespace's end)
READ_CHUNK = 65536
ENVIRONMENT = {
    "PATH": f"{VENV_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",  # not the workspace: what tools keep in $HOME is not the attempt's output
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",  # print() and tracebacks interleave in the order they happened
    "PYTEST_ADDOPTS": "-p no:cacheprovider",  # no .pytest_cache left in the workspace
}
# Host paths that are links into /usr on a merged-/usr system, or folders to bind where they are not.
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
HOST_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
OWN_ETC = {
    "/etc/passwd": (
        f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/tmp:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "/etc/group": f"sandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
    "/etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "/etc/hostname": "sandbox\n",
}


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr interleaved; the tail, with a first line saying what was cut
    duration_sec: float
    timed_out: bool

    def as_json(self) -> str:
        """The `run` tool's result text: exactly {"exit_code", "output", "duration_sec", "timed_out"}."""
        return json.dumps(asdict(self), ensure_ascii=False)


class SandboxUnavailable(Exception):
    """No sandbox here; str() is the reason, fit to show a model."""


class _SetupFailed(Exception):
    """bwrap ended before it started the command; str() is what it said."""


def availability() -> tuple[bool, str]:
    """(True, "bubblewrap 0.8.0") when commands can run, else (False, why not). Probed once per
    process (and per configuration): a real sandbox runs `true` with every mount of a run."""
    return _probe(*_configuration())


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
    """`bash -c command` in the sandbox with the workspace as its cwd. Raises SandboxUnavailable
    when bubblewrap is missing or broken (nothing runs then), ValueError for a workspace that is
    not a folder the sandbox can reach."""
    ok, reason = availability()
    if not ok:
        raise SandboxUnavailable(f"execution is unavailable: {reason}")
    bwrap, venv = _configuration()
    limits = _Limits(
        cpu_sec=cpu_sec if cpu_sec is not None else math.ceil(timeout_sec) + 1,
        memory_mb=memory_mb,
        max_processes=max_processes,
        max_file_mb=max_file_mb,
        nice=_niceness(),
    )
    try:
        return _run(bwrap, Path(venv), Path(workspace).absolute(), command, timeout_sec, output_limit, limits)
    except _SetupFailed as exc:
        raise SandboxUnavailable(f"execution is unavailable: {exc}") from exc


@dataclass(frozen=True)
class _Limits:
    cpu_sec: int
    memory_mb: int
    max_processes: int
    max_file_mb: int
    # The command's CPU priority below the engine's (`nice`): agents' tests and builds are batch
    # work, and on a busy host they otherwise starve the API, the console and the dispatch.
    nice: int = 0

    def ulimit(self) -> str:
        """bash's ulimit for them, soft and hard alike so the command cannot raise them again; but
        the CPU's hard limit a second later, so the soft one ends a process with SIGXCPU ("CPU time
        limit exceeded"), not the hard one's SIGKILL."""
        return (
            f"ulimit -t {self.cpu_sec + 1} -v {self.memory_mb * 1024} -u {self.max_processes}"
            f" -f {self.max_file_mb * 1024} -c 0 && ulimit -S -t {self.cpu_sec}"
        )


def _niceness() -> int:
    return settings.OPENCLAW_SANDBOX_NICE if settings.configured else 0


def _configuration() -> tuple[str, str]:
    """The bwrap executable and the sandbox's Python environment (settings; defaults without Django)."""
    if not settings.configured:
        return "bwrap", str(Path(__file__).resolve().parent.parent / ".venv-sandbox")
    return settings.OPENCLAW_SANDBOX_BWRAP, str(settings.OPENCLAW_SANDBOX_VENV)


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, venv: str) -> tuple[bool, str]:
    executable = shutil.which(bwrap)
    if executable is None:
        return False, f"bubblewrap is not installed (no {bwrap}; Debian package `bubblewrap`)"
    try:
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bubblewrap does not start: {exc}"
    if not (Path(venv) / "bin" / "python3").exists():
        return False, f"the sandbox's Python environment {venv} is missing (`make install` builds it)"
    with tempfile.TemporaryDirectory(prefix="openclaw-sandbox-probe-") as workspace:
        try:
            result = _run(
                executable, Path(venv), Path(workspace), "true", 30.0, 2000, _Limits(30, 1024, 64, 16)
            )
        except (_SetupFailed, ValueError, OSError) as exc:
            return False, f"bubblewrap does not work here: {exc}"
    if result.exit_code != 0:
        return (
            False,
            f"bubblewrap does not work here: exit {result.exit_code}: {result.output.strip()[-300:]}",
        )
    return True, version or "bubblewrap"


def _run(
    bwrap: str,
    venv: Path,
    workspace: Path,
    command: str,
    timeout_sec: float,
    output_limit: int,
    limits: _Limits,
) -> RunResult:
    if not workspace.is_dir():
        raise ValueError(f"the workspace {workspace} is not a folder")
    if "\0" in command:
        return RunResult(
            2, "the command contains a NUL character, which no shell command can hold", 0.0, False
        )
    as_root = os.geteuid() == 0
    if as_root:
        _hand_over(workspace)
    started = time.monotonic()
    with _Inherited() as inherited:
        status_read, status_write = inherited.pipe()
        options = ["--json-status-fd", str(status_write), *_options(venv, workspace, limits, inherited)]
        shell = _shell(command, limits, inherited, options)
        # The options through a file, so the sandbox's PID 1 (a bwrap) shows no host path in its
        # command line; the command stays an argument of the shell.
        argv = [bwrap, "--args", inherited.memory_file(b"".join(o.encode() + b"\0" for o in options)), *shell]
        as_user = {}
        if as_root and (setpriv := shutil.which("setpriv")):
            # setpriv (util-linux) changes user in a process of its own and execs bwrap. Popen's
            # user= does it too, but then CPython forks instead of vforking, which costs the
            # worker's page tables (3-5 ms for a 100 MB process) on every run.
            argv[:0] = [setpriv, f"--reuid={HOST_UID}", f"--regid={HOST_GID}", "--clear-groups", "--"]
        elif as_root:
            as_user = {"user": HOST_UID, "group": HOST_GID, "extra_groups": []}
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=inherited.passed,
                start_new_session=True,  # bwrap leads a process group: the deadline kills it whole
                env={},  # bwrap's own: its PID 1 in the sandbox keeps it (/proc/1/environ)
                **as_user,
            )
        except OSError as exc:
            raise _SetupFailed(f"bubblewrap does not start ({exc})") from exc
        inherited.close_passed()  # without our copy of its write end, the status pipe ends with bwrap
        tail, total, status, timed_out = _collect(proc, status_read, started + timeout_sec, output_limit)
    duration = time.monotonic() - started
    if '"child-pid"' not in status:  # bwrap stopped before starting the command: its own error
        message = tail.decode("utf-8", "replace").strip()[-300:] or f"bwrap exited with {proc.returncode}"
        raise _SetupFailed(message)
    exit_code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    if timed_out:
        exit_code = TIMED_OUT_EXIT_CODE
    return RunResult(exit_code, _tail_text(tail, total, output_limit), round(duration, 3), timed_out)


class _Inherited:
    """The file descriptors bwrap inherits (files it copies into the sandbox, the status pipe's
    write end), and ours; all closed on leaving."""

    def __init__(self):
        self.passed: list[int] = []
        self.ours: list[int] = []

    def memory_file(self, content: bytes) -> str:
        fd = os.memfd_create("openclaw-sandbox")
        self.passed.append(fd)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return str(fd)

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.ours.append(read)
        self.passed.append(write)
        return read, write

    def close_passed(self) -> None:
        for fd in self.passed:
            os.close(fd)
        self.passed = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close_passed()
        for fd in self.ours:
            os.close(fd)


def _options(venv: Path, workspace: Path, limits: _Limits, inherited: _Inherited) -> list[str]:
    """bwrap's options: the namespaces, the environment and the file system of the module's docstring."""
    options = ["--unshare-all", "--unshare-user", "--disable-userns"]
    options += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--hostname", "sandbox"]
    options += ["--die-with-parent", "--new-session", "--clearenv"]
    for name, value in ENVIRONMENT.items():
        options += ["--setenv", name, value]
    options += ["--ro-bind", "/usr", "/usr"]
    for path in ROOT_LINKS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    options += ["--proc", "/proc", "--dev", "/dev"]
    tmpfs_bytes = str(max(limits.max_file_mb, 16) * 2**20)
    options += ["--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", "/tmp"]
    options += ["--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    options += ["--perms", "0755", "--dir", "/etc"]
    for path in HOST_ETC:
        options += ["--ro-bind-try", path, path]
    for path, content in OWN_ETC.items():
        options += ["--perms", "0644", "--file", inherited.memory_file(content.encode()), path]
    options += ["--perms", "0755", "--dir", "/opt", "--ro-bind", str(venv), VENV_MOUNT]
    base = _base_prefix(venv)
    if base is not None:
        options += ["--ro-bind", base, base]
    options += ["--bind", str(workspace), WORKSPACE]
    if os.path.lexists(workspace / ".git"):
        options += ["--ro-bind", str(workspace / ".git"), f"{WORKSPACE}/.git"]
    options += ["--chdir", WORKSPACE]
    return options


def _shell(command: str, limits: _Limits, inherited: _Inherited, options: list[str]) -> list[str | bytes]:
    """The sandbox's first shell: the limits, then `bash -c command` in its place. A command too
    long for an argument becomes a file the shell runs (an option added to `options`)."""
    try:
        encoded = command.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates, as JSON may carry them
        encoded = command.encode("utf-8", "replace")
    lowered = f"nice -n {limits.nice} " if limits.nice > 0 else ""
    if len(encoded) <= ARGV_MAX_BYTES:
        then, argument = f'exec {lowered}bash -c "$1"', [encoded]
    else:
        options += ["--perms", "0444", "--file", inherited.memory_file(encoded), COMMAND_FILE]
        then, argument = f"exec {lowered}bash {COMMAND_FILE}", []
    options += ["--remount-ro", "/"]
    return ["bash", "--noprofile", "--norc", "-c", f"{limits.ulimit()} && {then}", "bash", *argument]


@functools.lru_cache(maxsize=8)
def _base_prefix(venv: Path) -> str | None:
    """The folder of the interpreter the environment runs on, when /usr does not hold it already."""
    try:
        config = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    home = re.search(r"^home\s*=\s*(.+)$", config, re.MULTILINE)
    if home is None:
        return None
    prefix = Path(home.group(1).strip()).resolve().parent
    return None if prefix == Path("/usr") or Path("/usr") in prefix.parents else str(prefix)


def _hand_over(workspace: Path) -> None:
    """Let the sandbox's host user write the workspace (see the module's docstring): every file and
    folder chowned to it except `.git`, the top folder only given to its group. Walked by file
    descriptors, never following a link, so a link the sandbox swaps in cannot send a chown out."""
    for parent in workspace.resolve().parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise ValueError(
                f"the sandbox's user cannot reach the workspace {workspace}: "
                f"{parent} is not searchable by others (o+x)"
            )
    top = os.stat(workspace)
    if top.st_gid != HOST_GID:
        os.chown(workspace, -1, HOST_GID)
    if top.st_mode & 0o070 != 0o070:
        os.chmod(workspace, stat.S_IMODE(top.st_mode) | 0o070)
    for folder, dirs, files, folder_fd in os.fwalk(workspace, follow_symlinks=False):
        if folder == str(workspace):
            dirs[:] = [name for name in dirs if name != ".git"]
            files = [name for name in files if name != ".git"]
        for name in dirs + files:
            try:
                entry = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                if entry.st_uid != HOST_UID or entry.st_gid != HOST_GID:
                    os.chown(name, HOST_UID, HOST_GID, dir_fd=folder_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass  # gone meanwhile


def _collect(
    proc: subprocess.Popen, status_fd: int, deadline: float, keep: int
) -> tuple[bytes, int, str, bool]:
    """Read the output (its last `keep` bytes kept) and bwrap's status until both end, killing the
    sandbox at the deadline: (output tail, output bytes in all, status, timed out)."""
    output_fd = proc.stdout.fileno()
    tail, status = bytearray(), bytearray()
    total, timed_out = 0, False
    init = None  # a pidfd of the sandbox's PID 1, once bwrap's status names it
    reading = {output_fd, status_fd}
    try:
        with selectors.DefaultSelector() as selector:
            for fd in reading:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while reading:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if timed_out:
                        break  # still open after the kill's grace: nothing more is coming
                    timed_out = True
                    _kill(proc)
                    deadline = time.monotonic() + KILL_GRACE_SEC
                    continue
                for key, _ in selector.select(remaining):
                    try:
                        chunk = os.read(key.fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(key.fd)
                        reading.discard(key.fd)
                    elif key.fd == output_fd:
                        total += len(chunk)
                        tail += chunk
                        if len(tail) > keep:
                            del tail[: len(tail) - keep]
                    elif len(status) < READ_CHUNK:
                        status += chunk
                        if init is None:
                            init = _open_init(status)
        try:
            proc.wait(timeout=KILL_GRACE_SEC)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
    finally:
        if proc.poll() is None:
            _kill(proc)
            proc.wait()
        proc.stdout.close()
        if init is not None:
            _await_end(init)
    return bytes(tail), total, status.decode("utf-8", "replace"), timed_out


def _open_init(status: bytes) -> int | None:
    """A pidfd of the sandbox's PID 1 (bwrap's status names its host pid first), -1 when it is gone
    already, or None until the status names it.

    bwrap itself exits as soon as the command does; its PID 1, and with it every process the command
    left behind, goes a moment later (SIGKILL by --die-with-parent). A run returns after that moment,
    not before, so nothing of it outlives `run`."""
    found = re.search(rb'"child-pid"\s*:\s*(\d+)', status)
    if found is None:
        return None
    try:
        return os.pidfd_open(int(found.group(1)))
    except OSError:  # gone already
        return -1


def _await_end(init: int) -> None:
    """Wait until the sandbox's PID 1 has exited; the kernel ends every other process of its PID
    namespace before that. SIGKILL it when it lingers (it should not: it dies with bwrap)."""
    if init < 0:
        return
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(init, selectors.EVENT_READ)
            if not selector.select(KILL_GRACE_SEC):
                try:
                    signal.pidfd_send_signal(init, signal.SIGKILL)
                except ProcessLookupError:
                    return
                selector.select(KILL_GRACE_SEC)
    finally:
        os.close(init)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL bwrap's process group; its sandbox's PID 1 dies with it (--die-with-parent), and
    with PID 1 every process of the namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail_text(tail: bytes, total: int, limit: int) -> str:
    """The output as text of at most `limit` characters: all of it, or a line saying how much was
    cut and then its end."""
    if total <= len(tail) and len(tail) <= limit:
        return storable.decode(tail)
    start = 0
    while start < min(4, len(tail)) and tail[start] & 0xC0 == 0x80:  # a character cut in two
        start += 1
    text = storable.decode(tail[start:])

    def notice(cut: int) -> str:
        return f"[output cut: the first {cut:,} of {total:,} bytes are not shown]\n"

    room = max(0, limit - len(notice(total)))
    text = text[-room:] if room else ""
    return (notice(total - len(text.encode("utf-8", "replace"))) + text)[:limit]
