"""The sandbox of the agents' `run` tool, with real bubblewrap: what runs, and every way out refused.

Each escape attempt runs for real; the test process (standing in for the worker) checks afterwards
that nothing reached it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from pools import sandbox

SLACK_SEC = 3.0  # bwrap's start and the kill on a loaded 2-core machine

pytestmark = pytest.mark.skipif(
    not sandbox.availability()[0] and not os.environ.get("CI"),
    reason=f"no sandbox here: {sandbox.availability()[1]}",
)


@pytest.fixture
def workspace() -> Path:
    """A folder under var/ (pytest's tmp_path is under a folder only root may enter, which the
    sandbox's user cannot reach)."""
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder)


def run(workspace: Path, command: str, **options) -> sandbox.RunResult:
    options.setdefault("timeout_sec", 30)
    return sandbox.run(workspace, command, **options)


def test_python_and_pytest_run_the_tests_in_the_workspace(workspace):
    (workspace / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (workspace / "test_calc.py").write_text(
        "import fastapi, flask, httpx, pydantic, sqlalchemy\n"
        "from calc import add\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n"
    )
    result = run(workspace, "python --version && python3 -c 'import sys; print(sys.prefix)' && pytest -q")
    assert (result.exit_code, result.timed_out) == (0, False), result.output
    assert result.output.startswith("Python 3.")
    assert "/opt/sandbox-venv\n" in result.output
    assert "1 passed" in result.output
    # The workspace is the attempt's output: no caches or bytecode left in it.
    assert sorted(p.name for p in workspace.iterdir()) == ["calc.py", "test_calc.py"]


def test_the_result_is_the_run_tools_json(workspace):
    result = run(workspace, "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.output, result.timed_out) == (3, "out\nerr\n", False)
    assert list(json.loads(result.as_json())) == ["exit_code", "output", "duration_sec", "timed_out"]


def test_files_the_command_writes_land_in_the_workspace_for_the_worker(workspace):
    (workspace / "app").mkdir()
    (workspace / "app" / "given.py").write_text("x = 1\n")
    result = run(workspace, "echo new > app/new.txt && echo more >> app/given.py && mkdir -p out/deep")
    assert result.exit_code == 0, result.output
    assert (workspace / "app" / "new.txt").read_text() == "new\n"
    assert (workspace / "app" / "given.py").read_text() == "x = 1\nmore\n"
    assert (workspace / "out" / "deep").is_dir()
    if os.geteuid() == 0:  # the command ran as the host's unprivileged user, not as root
        assert {(workspace / p).stat().st_uid for p in ("app/new.txt", "out")} == {sandbox.HOST_UID}
        assert workspace.stat().st_uid == 0  # the top folder stays the worker's (git's ownership check)


def test_a_connection_to_a_port_listening_on_the_host_is_refused(workspace):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = run(
            workspace,
            f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)\"; "
            "echo exit=$?; "
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=5)\"",
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came
    finally:
        listener.close()
    assert "ConnectionRefusedError" in result.output and "exit=1" in result.output
    assert "Network is unreachable" in result.output and result.exit_code == 1


def test_etc_shadow_cannot_be_read(workspace):
    assert Path("/etc/shadow").exists()  # on the host it is there
    result = run(workspace, "cat /etc/shadow")
    assert result.exit_code == 1
    assert result.output == "cat: /etc/shadow: No such file or directory\n"


def test_the_checkout_its_var_and_roots_home_are_invisible(workspace):
    hidden = [
        settings.BASE_DIR,
        settings.BASE_DIR / "config.json",
        settings.VAR_DIR,
        settings.VAR_DIR / "secret_key",
        Path(settings.OPENCLAW_SANDBOX_VENV),
        Path("/root"),
        Path("/home"),
        workspace,  # the workspace is only at /workspace
    ]
    assert all(path.exists() for path in hidden[:5])
    result = run(
        workspace, " ; ".join(f"test -e {path} && echo visible: {path}" for path in hidden) + "; true"
    )
    assert (result.exit_code, result.output) == (0, "")
    listing = run(workspace, "ls /")
    assert listing.output.split() == [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib64",
        "opt",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    ]


def test_nothing_outside_the_workspace_can_be_written(workspace):
    marker = f"openclaw-escape-{uuid.uuid4().hex}"
    targets = [
        f"/{marker}",
        f"/usr/{marker}",
        f"/etc/{marker}",
        "/etc/passwd",
        f"/opt/sandbox-venv/{marker}",
    ]
    targets += [f"/dev/{marker}", f"/proc/{marker}"]
    result = run(
        workspace, " ; ".join(f"touch {path} && echo wrote {path}" for path in targets) + "; touch ok"
    )
    assert "wrote" not in result.output
    assert result.output.count("Read-only file system") + result.output.count(
        "Permission denied"
    ) + result.output.count("No such file or directory") == len(targets), result.output
    assert (workspace / "ok").exists()
    assert not any(Path(path).exists() for path in targets if path != "/etc/passwd")
    assert not (Path(settings.OPENCLAW_SANDBOX_VENV) / marker).exists()


def test_the_workspaces_git_folder_is_read_only(workspace):
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / ".git" / "config").write_text("[core]\n")
    result = run(
        workspace,
        "echo '[core] fsmonitor = evil' >> .git/config; echo evil > .git/hooks/post-commit; "
        "mv .git elsewhere; rm -rf .git; cat .git/config",
    )
    assert (workspace / ".git" / "config").read_text() == "[core]\n"
    assert list((workspace / ".git" / "hooks").iterdir()) == []
    assert not (workspace / "elsewhere").exists()
    assert result.output.endswith("[core]\n")


def test_a_fork_bomb_is_held_by_the_process_limit(workspace):
    counting = run(
        workspace,
        'python3 -c "\nimport os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n'
        "    except OSError as exc:\n        print('refused after', n, exc.strerror)\n        break\n"
        '    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\n"',
        max_processes=64,
    )
    assert counting.exit_code == 0 and "Resource temporarily unavailable" in counting.output
    assert 50 <= int(counting.output.split()[2]) < 64

    # The classic bomb, in a shell that keeps the sandbox alive until its deadline.
    mark = f"openclaw-bomb-{uuid.uuid4().hex}"
    started = time.monotonic()
    bomb = run(workspace, f"exec -a {mark} bash -c ':(){{ :|:& }};:; while :; do :; done'", timeout_sec=3)
    assert bomb.timed_out and time.monotonic() - started < 3 + SLACK_SEC
    # The worker is unharmed: it still starts processes, and none of the bomb's is left.
    assert subprocess.run(["true"]).returncode == 0
    assert _running(mark) == ""


def test_a_10_gb_file_fails_at_the_file_size_limit(workspace):
    result = run(
        workspace,
        "head -c 10G /dev/zero > big; echo exit=$?; head -c 10G /dev/zero > /tmp/big",
        max_file_mb=8,
    )
    assert "File size limit exceeded" in result.output and "exit=153" in result.output
    assert result.exit_code == 153  # 128 + SIGXFSZ
    assert (workspace / "big").stat().st_size == 8 * 2**20


def test_memory_beyond_the_limit_is_refused(workspace):
    result = run(workspace, "python3 -c 'b = bytearray(1024 ** 3)'", memory_mb=256)
    assert result.exit_code == 1 and "MemoryError" in result.output


def test_an_endless_loop_is_killed_at_the_deadline(workspace):
    result = run(workspace, "echo looping; while :; do :; done", timeout_sec=2)
    assert (result.timed_out, result.exit_code, result.output) == (
        True,
        sandbox.TIMED_OUT_EXIT_CODE,
        "looping\n",
    )
    assert 2 <= result.duration_sec < 2 + SLACK_SEC


def test_cpu_seconds_are_limited_per_process(workspace):
    result = run(workspace, "while :; do :; done", timeout_sec=30, cpu_sec=1)
    assert (result.timed_out, result.exit_code) == (False, 152)  # 128 + SIGXCPU
    assert result.duration_sec < 1 + SLACK_SEC


def test_commands_run_at_a_lower_cpu_priority_they_cannot_raise(workspace, settings):
    settings.OPENCLAW_SANDBOX_NICE = 10
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    result = run(workspace, "nice; renice -n -5 -p $$ >/dev/null 2>&1 || echo refused")
    assert result.output.split() == [str(mine + 10), "refused"], result.output
    # The command file of a long command runs at the same priority.
    result = run(workspace, "nice\n: " + "x" * 1_000_000)
    assert result.output.split() == [str(mine + 10)], result.output
    settings.OPENCLAW_SANDBOX_NICE = 0
    assert run(workspace, "nice").output.split() == [str(mine)]


def test_a_process_that_backgrounds_itself_is_gone_afterwards(workspace):
    mark = f"openclaw-daemon-{uuid.uuid4().hex}"
    result = run(
        workspace,
        f"(exec -a {mark} sleep 1000) >/dev/null 2>&1 & "
        f"setsid -f bash -c 'exec -a {mark}-setsid sleep 1000' >/dev/null 2>&1; "
        f"until [ $(pgrep -fc ^{mark}) = 2 ]; do sleep 0.05; done; echo both running",
    )
    assert (result.exit_code, result.output) == (0, "both running\n")
    assert _running(mark) == ""


def test_a_run_returns_only_once_every_process_it_left_is_gone(workspace):
    # bwrap exits with the command; what the command left dies a moment later with the sandbox's
    # PID 1. A hundred of them make that moment long enough to see, read straight from /proc.
    for _ in range(3):
        mark = f"openclaw-many-{uuid.uuid4().hex}"
        result = run(
            workspace,
            f"for i in $(seq 100); do (exec -a {mark} sleep 1000) >/dev/null 2>&1 & done; "
            f"until [ $(pgrep -fc ^{mark}) = 100 ]; do sleep 0.01; done; echo all running",
        )
        assert (result.exit_code, result.output) == (0, "all running\n")
        assert _in_proc(mark) == []


def _in_proc(mark: str) -> list[str]:
    """The pids of the host's processes whose command line starts with the mark, without starting a
    process to find them."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and Path(entry.path, "cmdline").read_bytes().startswith(mark.encode()):
                found.append(entry.name)
        except OSError:
            pass  # gone while reading
    return found


def test_a_worker_killed_mid_run_takes_its_sandbox_with_it(workspace):
    mark = f"openclaw-orphan-{uuid.uuid4().hex}"
    script = (
        "import django; django.setup()\n"
        "from pathlib import Path\nfrom pools import sandbox\n"
        f"sandbox.run(Path({str(workspace)!r}), 'exec -a {mark} sleep 1000', timeout_sec=600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "DJANGO_SETTINGS_MODULE": "openclaw_site.settings"}
    )
    try:
        assert _wait_for(lambda: _running(mark) != "", 60), "the sandboxed command never started"
    finally:
        worker.kill()
        worker.wait()
    assert _wait_for(lambda: _running(mark) == "", 10), _running(mark)


def test_the_workers_environment_does_not_reach_the_command(workspace, monkeypatch):
    secrets = {
        "SECRET_KEY": "django-secret-" + uuid.uuid4().hex,
        "ANTHROPIC_API_KEY": "sk-ant-" + uuid.uuid4().hex,
        "DATABASE_URL": "postgres://admin:pw@db/openclaw",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    # env, and what PID 1 (bwrap's init) was started with: its environment and command line.
    result = run(
        workspace, "env; echo; tr '\\0' '\\n' < /proc/1/environ; echo; tr '\\0' ' ' < /proc/1/cmdline"
    )
    assert result.exit_code == 0
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert names <= set(sandbox.ENVIRONMENT) | {"PWD", "SHLVL", "_"}
    assert not any(value in result.output for value in secrets.values())
    assert str(settings.BASE_DIR) not in result.output and str(workspace) not in result.output


def test_long_output_keeps_its_tail_and_says_what_was_cut(workspace):
    result = run(workspace, "python3 -c \"print('x' * 1_000_000); print('THE END')\"", output_limit=16_000)
    assert result.exit_code == 0 and len(result.output) <= 16_000
    first, rest = result.output.split("\n", 1)
    assert first.startswith("[output cut: the first ") and first.endswith(
        " of 1,000,009 bytes are not shown]"
    )
    assert rest.endswith("x\nTHE END\n") and len(result.output) > 15_900


def test_a_1_mb_command_runs(workspace):
    command = "echo start\n: " + "x" * 1_000_000 + "\necho done"
    result = run(workspace, command)
    assert (result.exit_code, result.output) == (0, "start\ndone\n")


def test_a_command_with_a_nul_character_is_answered_not_run(workspace):
    result = run(workspace, "touch ran\0")
    assert result.exit_code == 2 and "NUL" in result.output
    assert not (workspace / "ran").exists()


@pytest.mark.django_db
def test_healthz_reports_the_sandbox_and_its_version(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["sandbox"] == {"available": True, "version": sandbox.availability()[1]}
    assert response.json()["sandbox"]["version"].startswith("bubblewrap ")


@pytest.mark.skipif(os.geteuid() != 0, reason="only a worker running as root hands the workspace over")
def test_a_workspace_the_sandboxs_user_cannot_reach_is_refused(tmp_path):
    hidden = tmp_path / "workspace"  # under /tmp/pytest-of-root, mode 700
    hidden.mkdir()
    with pytest.raises(ValueError, match=r"is not searchable by others \(o\+x\)"):
        sandbox.run(hidden, "true", timeout_sec=5)


def _running(mark: str) -> str:
    """The host's processes whose command line starts with the mark."""
    found = subprocess.run(["pgrep", "-af", f"^{mark}"], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only a worker running as root changes user")
def test_without_setpriv_the_worker_changes_to_the_sandboxs_user_itself(workspace, monkeypatch):
    which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "setpriv" else which(name))
    result = run(workspace, "id -u; touch made")
    assert (result.exit_code, result.output) == (0, "1000\n")
    assert (workspace / "made").stat().st_uid == sandbox.HOST_UID  # who it is on the host


def _wait_for(condition, timeout_sec: float) -> bool:
    """Poll a condition on the host until it holds or the time is up."""
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
