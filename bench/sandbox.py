"""The sandbox's overhead: `sandbox.run(workspace, "true")` from call to return.

What an agent's `run` tool pays per command on top of the command itself: handing the workspace to
the sandbox's user, bwrap building the namespaces and mounts, the limits' shell and the exec of
`bash -c`, the kill-free exit, reading the output. Measured N times in a row (after one warm-up
call) in this process, in an empty workspace under var/bench/.

References, measured the same way: `/usr/bin/true` started directly (the cost of a process at all),
and bwrap with the fewest options that run `/usr/bin/true` (`--unshare-all --unshare-user` with
/usr bound; the floor of bubblewrap itself). And for information, `python3 -c pass` in the sandbox:
the interpreter's start, which every test run pays on top.
"""

import shutil
import subprocess
import time
import uuid

from . import harness

TARGET_P99_MS = 50.0


def timed(call, n: int) -> list[float]:
    call()  # warm-up: the first probe, page cache
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def run(ctx) -> dict:
    from pools import sandbox

    available, detail = sandbox.availability()
    if not available:
        return {
            "title": "sandbox start-to-exit overhead",
            "columns": ["case"],
            "rows": [],
            "checks": [("sandbox available", False, detail)],
        }
    n = 50 if ctx.quick else 200
    workspace = harness.VAR / "sandbox" / uuid.uuid4().hex
    workspace.mkdir(parents=True)
    bwrap = shutil.which("bwrap")
    minimal = [bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/usr", "/usr"]
    minimal += ["--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib", "/usr/bin/true"]

    def in_sandbox(command: str):
        def call():
            result = sandbox.run(workspace, command, timeout_sec=30)
            assert result.exit_code == 0, result.output

        return call

    cases = [
        ("sandbox.run(workspace, 'true')", in_sandbox("true"), n),
        ("/usr/bin/true, no sandbox", lambda: subprocess.run(["/usr/bin/true"], check=True), n),
        ("bwrap alone, fewest options, /usr/bin/true", lambda: subprocess.run(minimal, check=True), n),
        ("sandbox.run(workspace, 'python3 -c pass')", in_sandbox("python3 -c pass"), max(20, n // 4)),
    ]
    try:
        rows, data = [], {}
        for label, call, count in cases:
            summary = harness.summary_ms(timed(call, count))
            data[label] = summary
            rows.append([label, summary["n"], summary["p50_ms"], summary["p99_ms"], summary["max_ms"]])
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    p99 = data["sandbox.run(workspace, 'true')"]["p99_ms"]
    return {
        "title": f"sandbox start-to-exit overhead ({detail})",
        "columns": ["case", "n", "p50 ms", "p99 ms", "max ms"],
        "rows": rows,
        "data": data,
        "checks": [(f"sandbox p99 ≤ {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS, f"{p99} ms")],
    }
