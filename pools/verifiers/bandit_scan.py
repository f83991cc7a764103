"""bandit's findings on the Python files of an output: the files are written to a temporary
folder and parsed, never run."""

import tempfile
from pathlib import Path

from .findings import Finding
from .paths import path_problem

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
    with tempfile.TemporaryDirectory(prefix="openclaw-bandit-") as tmp:
        root = Path(tmp)
        for f in python_files:
            target = root / f["path"]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f["content"], encoding="utf-8", errors="replace")
            except OSError:
                continue  # a path clashing with another file's directory; verify_files reports the output
        try:
            report = _bandit_in_process(root)
        except Exception as exc:  # bandit itself failed: say so rather than pass the code as clean
            return [
                Finding(
                    "medium",
                    f"Security scan did not run: {type(exc).__name__}",
                    source="bandit",
                    rule="bandit-error",
                    recommendation="Re-run the security audit.",
                )
            ]
        return [_bandit_finding(result, root) for result in report]


def _bandit_in_process(root: Path) -> list[dict]:
    """bandit's library API: the same checks as its command line without starting an interpreter
    per output (each a costly start). It only parses the files; nothing is executed."""
    # Imported on first use: bandit loads its plugins on import, and the processes that import
    # the verifiers without scanning (the web process) need not pay for that.
    from bandit.core import config as bandit_config  # noqa: PLC0415 (see above)
    from bandit.core import manager as bandit_manager  # noqa: PLC0415 (see above)

    # B101 (assert) flags every generated test file; asserts there are the point.
    manager = bandit_manager.BanditManager(
        bandit_config.BanditConfig(), "file", quiet=True, profile={"include": set(), "exclude": {"B101"}}
    )
    manager.discover_files([str(root)], recursive=True)
    manager.run_tests()
    return [issue.as_dict() for issue in manager.get_issue_list()]


def _bandit_finding(result: dict, root: Path) -> Finding:
    test_id = result.get("test_id", "")
    try:
        file = Path(result["filename"]).relative_to(root).as_posix()
    except (KeyError, ValueError):
        file = result.get("filename")
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
