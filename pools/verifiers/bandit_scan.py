"""bandit's findings on the Python files of an output: the files are written to a temporary
folder and parsed, never run.

bandit parses model-written code, so it runs in a child process, never in the worker: a file
built to exhaust the parser's memory or time ends that child (address space `MEMORY_BYTES`, CPU
seconds, a wall-clock `TIMEOUT_SEC`, no core, no files written) and the scan says it did not run,
instead of taking the worker with it. The children come from a fork server that has imported
bandit once (multiprocessing's "forkserver": a fresh interpreter started on first use, so nothing
of the threaded worker is forked), so each scan costs a fork, not an interpreter and bandit's
plugins. A child hands back JSON, never a pickle.

`# nosec` comments are the model's own and are ignored (bandit's `ignore_nosec`), and bandit scans
exactly the files written (named one by one, so no glob or excluded folder leaves one out).
"""

import json
import math
import multiprocessing
import os
import resource
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

from ..scratch import process_dir
from .findings import Finding
from .paths import path_problem

# The copies of model output bandit reads, under the scanning process's own folder (pools.scratch).
SCRATCH = Path(tempfile.gettempdir()) / "openclaw-bandit"
TIMEOUT_SEC = 30.0
MEMORY_BYTES = 1024 * 2**20
REPLY_MAX_BYTES = 64 * 2**20
BANDIT_SYNTAX_ERROR = "syntax error while parsing AST from file"  # its reason for skipping such a file
# What the fork server imports once, so that each child starts with bandit loaded. A child also
# runs its parent's main script again (multiprocessing does so for a main started as a file, such
# as the `dramatiq` script of every worker), which only imports `dramatiq.__main__`: loaded here,
# that costs nothing, where importing it took about 65 ms of each scan.
_FORK_SERVER = multiprocessing.get_context("forkserver")
_FORK_SERVER.set_forkserver_preload(
    ["dramatiq.__main__", "bandit.core.manager", "bandit.core.config", __name__]
)

BANDIT_SEVERITY = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
# Advice per bandit test id for the findings agents most often trigger; others link bandit's docs.
BANDIT_ADVICE = {
    "B102": "Do not exec() strings; call the code directly.",
    "B105": "Read secrets from the environment or a secret store, never from source code.",
    "B106": "Read secrets from the environment or a secret store, never from source code.",
    "B107": "Read secrets from the environment or a secret store, never from source code.",
    "B108": "Use tempfile.mkstemp()/TemporaryDirectory() instead of fixed paths under /tmp.",
    "B301": "Do not unpickle untrusted data; use JSON.",
    "B303": "Use SHA-256 or better (hashlib.sha256), and a password hash (argon2, bcrypt) for passwords.",
    "B324": "Use SHA-256 or better (hashlib.sha256), and a password hash (argon2, bcrypt) for passwords.",
    "B307": "Use ast.literal_eval() for literals, or parse the input explicitly; never eval() input.",
    "B311": "Use the secrets module for tokens, keys and anything security-relevant.",
    "B501": "Keep TLS certificate verification on (verify=True).",
    "B506": "Use yaml.safe_load().",
    "B602": "Pass an argument list without shell=True (subprocess.run([...], check=True)).",
    "B605": "Pass an argument list to subprocess.run() instead of a shell string.",
    "B608": "Use parameterized queries: cursor.execute(sql, params) or the ORM.",
    "B201": "Never run Flask with debug=True in production.",
}


def run_bandit(files: list[dict]) -> list[Finding]:
    """Bandit's findings on the Python files of an output (files are written to a temp dir, never run)."""
    python_files = [
        f
        for f in files
        if isinstance(f, dict)
        and path_problem(f.get("path")) is None
        and isinstance(f.get("content"), str)
        and f["path"].lower().endswith(".py")
    ]
    if not python_files:
        return []
    with tempfile.TemporaryDirectory(prefix="scan-", dir=process_dir(SCRATCH)) as tmp:
        root = Path(tmp)
        written = []
        for f in python_files:
            target = root / f["path"]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f["content"], encoding="utf-8", errors="replace")
            except OSError:
                continue  # a path clashing with another file's directory; verify_files reports the output
            written.append(str(target))
        try:
            report = _scan_in_child(written)
        except _ScanFailed as exc:  # say so rather than pass the code as clean
            return [
                Finding(
                    "medium",
                    f"Security scan did not run: {exc}",
                    source="bandit",
                    rule="bandit-error",
                    recommendation="Re-run the security audit.",
                )
            ]
        findings = [_bandit_finding(result, root) for result in report["issues"]]
        for path, reason in report["skipped"]:
            if reason == BANDIT_SYNTAX_ERROR:
                continue  # verify_files reports the syntax error itself
            findings.append(
                Finding(
                    "medium",
                    f"Security scan skipped this file: {reason}",
                    file=_relative(path, root),
                    source="bandit",
                    rule="bandit-skipped",
                    recommendation="Split or simplify the file so it can be scanned.",
                )
            )
        return findings


class _ScanFailed(Exception):
    """The child did not report: a limit, the timeout, a crash; str() says which."""


def _scan_in_child(paths: list[str]) -> dict:
    """bandit's {"issues", "skipped"} on these files, from a child of the fork server (see the
    module's docstring)."""
    reader, writer = _FORK_SERVER.Pipe(duplex=False)
    child = _FORK_SERVER.Process(
        target=_child_main, args=(paths, writer, math.ceil(TIMEOUT_SEC) + 1, MEMORY_BYTES), daemon=True
    )
    try:
        child.start()
        writer.close()  # the child's end only: its exit is then the pipe's end
        if not reader.poll(TIMEOUT_SEC):
            raise _ScanFailed(f"timed out after {TIMEOUT_SEC:g}s")
        try:
            body = reader.recv_bytes(REPLY_MAX_BYTES)
        except (EOFError, OSError):
            child.join(5)
            raise _ScanFailed(_ended(child.exitcode)) from None
        try:
            report = json.loads(body)
        except ValueError:
            raise _ScanFailed("unreadable report") from None
        if not isinstance(report, dict) or "error" in report:
            raise _ScanFailed(
                str(report.get("error") if isinstance(report, dict) else "unreadable report")[:200]
            )
        return report
    finally:
        reader.close()
        if child.is_alive():
            child.kill()
        child.join(5)


def _ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        if -exitcode == 24:  # SIGXCPU
            return "stopped by its CPU time limit"
        return f"killed by signal {-exitcode}"
    return f"exited with {exitcode} without a report"


def _child_main(paths: list[str], reply: Connection, cpu_sec: int, memory_bytes: int) -> None:
    """In the child: limits, bandit, the report as JSON (or {"error"} for bandit's own exception)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # bandit's logging and prints go nowhere: no file may grow
    os.dup2(devnull, 2)
    for kind, soft, hard in (
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_CPU, cpu_sec, cpu_sec + 1),
        (resource.RLIMIT_FSIZE, 0, 0),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        ceiling = resource.getrlimit(kind)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(kind, (soft, hard))
    try:
        report = _bandit(paths)
    except MemoryError:
        report = {"error": "stopped by its memory limit"}
    except Exception as exc:  # bandit itself failed
        report = {"error": f"bandit failed ({type(exc).__name__})"}
    reply.send_bytes(json.dumps(report).encode())
    reply.close()


def _bandit(paths: list[str]) -> dict:
    """bandit's library API: the checks of its command line, on exactly these files; its issues,
    and the files it skipped (a parser that gave up, its memory limit) with why."""
    # Imported here, in the child (the fork server has it loaded): the worker never imports bandit.
    from bandit.core import config as bandit_config  # noqa: PLC0415 (see above)
    from bandit.core import manager as bandit_manager  # noqa: PLC0415 (see above)

    # B101 (assert) flags every generated test file; asserts there are the point.
    manager = bandit_manager.BanditManager(
        bandit_config.BanditConfig(),
        "file",
        quiet=True,
        profile={"include": set(), "exclude": {"B101"}},
        ignore_nosec=True,
    )
    manager.discover_files(paths)
    manager.run_tests()
    return {
        "issues": [issue.as_dict() for issue in manager.get_issue_list()],
        "skipped": [[path, reason] for path, reason in manager.skipped],
    }


def _relative(path: str | None, root: Path) -> str | None:
    try:
        return Path(path).relative_to(root).as_posix()
    except (TypeError, ValueError):
        return path


def _bandit_finding(result: dict, root: Path) -> Finding:
    test_id = result.get("test_id", "")
    file = _relative(result.get("filename"), root)
    advice = BANDIT_ADVICE.get(test_id) or f"See {result.get('more_info', 'the bandit documentation')}."
    return Finding(
        severity=BANDIT_SEVERITY.get(result.get("issue_severity", ""), "low"),
        title=f"{result.get('issue_text', '').strip()} ({test_id} {result.get('test_name', '')})",
        file=file,
        line=result.get("line_number"),
        recommendation=advice,
        source="bandit",
        rule=test_id,
    )
