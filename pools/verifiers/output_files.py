"""The files of one agent output as a whole: paths it may write, no clashes between them, and
contents that parse for their type."""

from .findings import Finding
from .paths import path_problem, printable, tree_clashes
from .syntax import parse_check


def verify_files(files: list[dict]) -> list[Finding]:
    """Check every file of an agent output: safe path, no clash with another file of the output,
    and content that parses for its type."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        problem = path_problem(path)
        if problem:
            findings.append(
                Finding(
                    "high",
                    f"Unsafe file path: {problem}",
                    file=printable(path),
                    rule="unsafe-path",
                    recommendation="Use a plain relative path inside the project: no '..', no .git, "
                    "no control characters, ':' or backslashes, no Windows device names.",
                )
            )
            continue
        content = entry.get("content")
        if not isinstance(content, str):
            findings.append(
                Finding(
                    "high",
                    "File content is not text",
                    file=path,
                    rule="bad-content",
                    recommendation="Return the file's content as a string.",
                )
            )
            continue
        if path in seen:
            findings.append(
                Finding(
                    "medium",
                    "The same file is written twice in one output",
                    file=path,
                    rule="duplicate-file",
                    recommendation="Merge both versions into one file.",
                )
            )
        seen.add(path)
        finding = parse_check(path, content)
        if finding is not None:
            findings.append(finding)
    findings += [
        Finding(
            "high",
            f"Paths clash: {message}",
            file=path,
            rule="path-clash",
            recommendation="Spell each file and folder one way (same case), and do not name a file "
            "like a folder.",
        )
        for path, message in tree_clashes(sorted(seen))
    ]
    return findings
