"""Without bubblewrap: the sandbox says why, `run` refuses, nothing ever runs unsandboxed, and
/healthz reports it without turning unhealthy."""

import json
import shutil
import uuid

import pytest

from pools import sandbox


@pytest.fixture
def no_bwrap(settings, tmp_path):
    settings.OPENCLAW_SANDBOX_BWRAP = str(tmp_path / "missing" / "bwrap")
    return settings.OPENCLAW_SANDBOX_BWRAP


def test_a_missing_bwrap_makes_the_sandbox_unavailable_and_runs_nothing(no_bwrap, tmp_path):
    ran = tmp_path / f"ran-{uuid.uuid4().hex}"
    assert sandbox.availability() == (
        False,
        f"bubblewrap is not installed (no {no_bwrap}; Debian package `bubblewrap`)",
    )
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.run(tmp_path, f"touch {ran}", timeout_sec=5)
    assert str(refused.value).startswith("execution is unavailable: bubblewrap is not installed")
    assert not ran.exists()


@pytest.fixture
def reachable_folder(settings):
    """A folder the sandbox's unprivileged user may enter (pytest's tmp_path is root's alone)."""
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder)


def test_a_bwrap_that_does_not_work_makes_the_sandbox_unavailable(settings, tmp_path, reachable_folder):
    broken = reachable_folder / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    settings.OPENCLAW_SANDBOX_BWRAP = str(broken)
    ran = tmp_path / f"ran-{uuid.uuid4().hex}"
    available, reason = sandbox.availability()
    assert not available
    assert reason == "bubblewrap does not work here: bwrap: No permissions to create new namespace"
    with pytest.raises(
        sandbox.SandboxUnavailable, match="^execution is unavailable: bubblewrap does not work"
    ):
        sandbox.run(tmp_path, f"touch {ran}", timeout_sec=5)
    assert not ran.exists()


def test_a_missing_python_environment_makes_the_sandbox_unavailable(settings, tmp_path):
    settings.OPENCLAW_SANDBOX_VENV = str(tmp_path / "no-venv")
    available, reason = sandbox.availability()
    if sandbox.shutil.which(settings.OPENCLAW_SANDBOX_BWRAP) is None:
        assert reason.startswith("bubblewrap is not installed")
    else:
        assert (available, reason) == (
            False,
            f"the sandbox's Python environment {tmp_path / 'no-venv'} is missing (`make install` builds it)",
        )


@pytest.mark.django_db
def test_healthz_says_the_sandbox_is_unavailable_and_stays_healthy(client, no_bwrap):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "ok" and body["failed"] == []
    assert body["sandbox"] == {
        "available": False,
        "reason": f"bubblewrap is not installed (no {no_bwrap}; Debian package `bubblewrap`)",
    }


def test_the_run_result_is_exactly_the_tools_json():
    result = sandbox.RunResult(exit_code=1, output="é\n", duration_sec=0.25, timed_out=False)
    assert result.as_json() == '{"exit_code": 1, "output": "é\\n", "duration_sec": 0.25, "timed_out": false}'


@pytest.mark.parametrize(
    ("tail", "total", "limit", "expected"),
    [
        (b"short\n", 6, 100, "short\n"),
        (
            b"0123456789" * 20,
            5000,
            100,
            "[output cut: the first 4,959 of 5,000 bytes are not shown]\n9" + "0123456789" * 4,
        ),
        # Its first character cut in two by the tail: left out.
        (
            b"\xa9" + "é".encode() * 30,
            2000,
            100,
            "[output cut: the first 1,940 of 2,000 bytes are not shown]\n" + "é" * 30,
        ),
        (b"x" * 10, 10_000, 5, "[outp"),
    ],
)
def test_cut_output_keeps_its_end_within_the_limit(tail, total, limit, expected):
    text = sandbox._tail_text(tail, total, limit)
    assert text == expected and len(text) <= limit


def test_the_start_up_log_says_loudly_that_the_sandbox_is_unavailable(no_bwrap):
    from io import StringIO

    from openclaw_site.management.commands.serve import Command

    out, err = StringIO(), StringIO()
    Command(stdout=out, stderr=err, no_color=True).report_sandbox()
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0] == lines[-1] == "!" * 78
    assert (
        lines[1]
        == f"sandbox: unavailable (bubblewrap is not installed (no {no_bwrap}; Debian package `bubblewrap`))"
    )
