"""The real bubblewrap sandbox against commands that try to get out: each one refused or killed,
the test process (standing for the worker) unharmed."""

import os
import socket
import subprocess
import time

import pytest
from django.conf import settings

from pools import sandbox
from pools.agent_tools import Workspace


@pytest.fixture(autouse=True)
def _bubblewrap_here():
    available, reason = sandbox.availability()
    if not available and not os.environ.get("CI"):
        pytest.skip(reason)
    assert available, reason  # CI installs bubblewrap: a missing sandbox there is a failure


@pytest.fixture
def workspace():
    with Workspace({"app.py": "print('hi')\n"}, parent=settings.OPENCLAW_WORKSPACES_DIR) as ws:
        yield ws


def run(workspace, command: str, timeout: float = 10, **limits) -> sandbox.RunResult:
    return sandbox.run(workspace.root, command, timeout_sec=timeout, **limits)


def test_python_and_pytest_run_a_test_in_the_workspace(workspace):
    workspace.write_file("tests/test_app.py", "def test_one():\n    assert 1 + 1 == 2\n")
    result = run(workspace, "python3 app.py && pytest -q tests", timeout=60)
    assert result.exit_code == 0, result.output
    assert "hi" in result.output and "1 passed" in result.output
    assert not result.timed_out


def test_no_network_even_to_a_port_on_this_machine(workspace):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        script = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('CONNECTED' + '!')"
        )
        workspace.write_file("probe.py", script)
        result = run(workspace, "python3 probe.py")
    finally:
        listener.close()
    assert result.exit_code != 0 and "CONNECTED!" not in result.output
    assert "Connection refused" in result.output or "Network is unreachable" in result.output


def test_the_hosts_secrets_and_files_are_not_there(workspace):
    result = run(workspace, f"cat /etc/shadow; ls /root; ls {settings.BASE_DIR}; ls {settings.VAR_DIR}")
    assert result.exit_code != 0
    assert result.output.count("No such file or directory") == 4, result.output


def test_nothing_outside_the_workspace_can_be_written(workspace):
    result = run(workspace, "touch /usr/x || touch /x || touch /etc/x || touch /opt/x; echo $?")
    assert result.output.strip().splitlines()[-1] == "1"
    assert "Read-only file system" in result.output
    assert not os.path.exists("/usr/x") and not os.path.exists("/x")


def test_the_environment_is_the_sandboxs_own(workspace, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s3cr3t-value")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-leak")
    monkeypatch.setenv("DATABASE_URL", "postgres://leak")
    result = run(workspace, "env")
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert names <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "USER",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PWD",
        "SHLVL",
        "_",
    }
    assert "leak" not in result.output and "s3cr3t" not in result.output


def test_a_fork_bomb_is_bounded_and_ends(workspace):
    started = time.monotonic()
    result = run(
        workspace, "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", timeout=15, max_processes=64
    )
    assert time.monotonic() - started < 20
    assert "Resource temporarily unavailable" in result.output or result.timed_out
    # Everything it started is gone with the sandbox.
    assert subprocess.run(["pgrep", "-u", "nobody", "-f", "bomb"], capture_output=True).stdout == b""


def test_a_huge_file_is_refused_by_the_file_size_limit(workspace):
    result = run(workspace, "head -c 10G /dev/zero > big; echo exit=$?", timeout=30, max_file_mb=16)
    assert "exit=0" not in result.output and "File size limit exceeded" in result.output
    assert (workspace.root / "big").stat().st_size <= 16 << 20


def test_an_endless_loop_is_killed_at_its_timeout(workspace):
    started = time.monotonic()
    result = run(workspace, "while true; do :; done", timeout=2)
    assert result.timed_out and result.exit_code == -9
    assert 2 <= time.monotonic() - started < 8
    assert "ran past its 2s limit" in result.output


def test_a_process_left_in_the_background_dies_with_the_command(workspace):
    marker = f"sleep {400 + os.getpid() % 97}.25"
    result = run(workspace, f"{marker} & echo started")
    assert result.exit_code == 0 and "started" in result.output
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_memory_is_limited(workspace):
    result = run(workspace, "python3 -c \"x = bytearray(2 * 1024**3); print('ALLOCATED')\"", memory_mb=512)
    assert result.exit_code != 0 and "MemoryError" in result.output and "ALLOCATED" not in result.output


def test_long_output_keeps_its_tail_and_says_what_was_cut(workspace):
    result = run(workspace, "python3 -c \"print('x' * 1_000_000); print('THE END')\"", output_limit=4000)
    assert len(result.output) < 4200
    assert result.output.rstrip().endswith("THE END")
    assert "output cut" in result.output


def test_a_command_of_a_megabyte_gets_a_clear_answer(workspace):
    result = run(workspace, "echo " + "x" * 1_000_000)
    assert result.exit_code != 0 and "longer than" in result.output


def test_without_bubblewrap_nothing_runs(workspace, settings, tmp_path):
    settings.OPENCLAW_SANDBOX_BWRAP = str(tmp_path / "no-bwrap")
    sandbox.availability.cache_clear()
    try:
        assert sandbox.availability()[0] is False
        with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
            run(workspace, f"touch {workspace.root}/ran")
        assert not (workspace.root / "ran").exists()
    finally:
        sandbox.availability.cache_clear()
