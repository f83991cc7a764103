"""Scratch folders per process: what a SIGKILLed process left is swept, nothing of a live one is."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command

from pools.agent_tools import Workspace
from pools.processes import start_time
from pools.scratch import process_dir, remove_own, sweep_gone
from pools.verifiers.bandit_scan import SCRATCH, run_bandit

ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from pools.agent_tools import Workspace\n"
    "workspace = Workspace({'app.py': 'print(1)'}, parent=Path(sys.argv[1]))\n"
    "print(workspace.root, flush=True)\n"
    "sys.stdin.read()\n"  # holds its workspace until killed
)


def child_with_a_workspace(parent: Path) -> tuple[subprocess.Popen, Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(parent)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return child, Path(child.stdout.readline().strip())


def test_a_killed_process_scratch_is_swept_and_a_live_ones_kept(tmp_path):
    killed, killed_workspace = child_with_a_workspace(tmp_path)
    alive, alive_workspace = child_with_a_workspace(tmp_path)
    mine = Workspace({}, parent=tmp_path)
    host = socket.gethostname()
    reused_pid = tmp_path / f"proc-{alive.pid}-1-{host}"  # the pid of a later process: not its folder
    other_host = tmp_path / f"proc-{killed.pid}-1-elsewhere"
    not_scratch = [tmp_path / "ws-kept", tmp_path / "proc-x"]
    for folder in (reused_pid, other_host, *not_scratch):
        folder.mkdir()
    try:
        assert (killed_workspace / "app.py").is_file()
        assert sweep_gone(tmp_path) == [reused_pid]

        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        assert sweep_gone(tmp_path) == [killed_workspace.parent]
        assert not killed_workspace.parent.exists()
        assert (alive_workspace / "app.py").is_file() and mine.root.is_dir()
        assert other_host.is_dir() and all(folder.is_dir() for folder in not_scratch)
    finally:
        alive.kill()
        alive.wait(timeout=10)
        mine.close()


def test_scratch_folders_are_named_for_their_process(tmp_path):
    folder = process_dir(tmp_path)
    assert folder.name == f"proc-{os.getpid()}-{start_time(os.getpid())}-{socket.gethostname()}"
    assert process_dir(tmp_path) == folder
    assert folder.stat().st_mode & 0o777 == 0o755  # the sandbox's user goes through it
    with Workspace({}, parent=tmp_path) as workspace:
        assert workspace.root.parent == folder
    assert start_time(2**22 + 1) is None  # above the kernel's highest pid
    remove_own(tmp_path)
    assert not folder.exists()
    assert process_dir(tmp_path) == folder and folder.is_dir()  # made again when needed


def test_bandit_leaves_nothing_in_its_scratch():
    findings = run_bandit(
        [{"path": "app.py", "content": "import subprocess\nsubprocess.call('ls', shell=True)\n"}]
    )
    assert any(f.rule.startswith("B6") for f in findings)
    assert list(process_dir(SCRATCH).iterdir()) == []


def test_the_reaper_sweeps_what_killed_workers_left(db, redis_server, settings, tmp_path):
    settings.OPENCLAW_WORKSPACES_DIR = tmp_path
    killed, workspace = child_with_a_workspace(tmp_path)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    assert workspace.is_dir()

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        call_command("reaper", "--once")
    finally:
        for sig, handler in handlers.items():  # the command takes them for its loop
            signal.signal(sig, handler)

    assert not workspace.parent.exists()
