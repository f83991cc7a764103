"""Every agent output is checked by real tools before it counts, never by the model alone.

`verify_output(pool, reply, dependencies)` returns the task result with the tools' findings joined
to the model's and a `verification` record (what ran, what it found), or raises `OutputBroken`
when a file of the output does not parse or escapes the project: that attempt failed, its reason
is recorded, and the task is retried.

- every pool: each path is safe, no two clash, each file parses for its type (`verify_files`);
  bandit scans its Python files;
- security: bandit also scans the code of its dependencies (what it audited), so an audit's
  findings never rest on the model alone;
- database: each `.sql` file is applied to a scratch SQLite database (`check_schema`), and the
  migrations with the schema the task started from must make the schema's columns
  (`check_migrations`); a rejected schema or migration is not a failed attempt but a conflict the
  aggregator resolves with a revision (`verification["schema_accepted"]` is False).
"""

from pathlib import PurePosixPath

from .verifiers.bandit_scan import run_bandit
from .verifiers.findings import Finding
from .verifiers.output_files import verify_files
from .verifiers.schema import check_migrations, check_schema, is_migration

BLOCKING_SEVERITIES = ("critical", "high")
# Problems that make an output unusable, as opposed to findings about usable code.
BROKEN_RULES = {"syntax", "unsafe-path", "path-clash", "bad-content"}
# bandit rates by pattern alone and cannot see whether request input reaches the call; in the
# web backends agents write it usually does, and the seed treats SQL injection as critical.
SEVERITY_FLOOR = {"B608": "high", "B307": "high", "B102": "high"}
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class OutputBroken(Exception):
    """An output whose files cannot be used (they do not parse, or their paths are unsafe or clash)."""


def _floored(finding: Finding) -> Finding:
    floor = SEVERITY_FLOOR.get(finding.rule)
    if floor and SEVERITY_RANK[floor] > SEVERITY_RANK.get(finding.severity, 0):
        finding.severity = floor
    return finding


def _where(finding: Finding) -> str:
    place = finding.file or "output"
    return f"{place}:{finding.line}: {finding.title}" if finding.line else f"{place}: {finding.title}"


def verify_output(
    pool: str, reply: dict, dependencies: list[dict], base_files: dict[str, str] | None = None
) -> dict:
    """The result of an attempt whose reply parsed: tool findings joined, `verification` recorded.
    `base_files`: the project's tree where the task started (path → text), which a migration of
    its schema starts from."""
    files = reply.get("files", [])
    file_findings = verify_files(files)
    broken = [f for f in file_findings if f.severity in BLOCKING_SEVERITIES and f.rule in BROKEN_RULES]
    if broken:
        raise OutputBroken(
            "; ".join(_where(f) for f in broken[:5])
            + (f" (+{len(broken) - 5} more)" if len(broken) > 5 else "")
        )
    own_python = [f["path"] for f in files if f["path"].lower().endswith(".py")]
    bandit = [_floored(f) for f in run_bandit(files)]
    record: dict = {
        "files_checked": len(files),
        "file_findings": len(file_findings),
        "bandit": {"scanned": own_python, "findings": len(bandit)},
    }
    tool_findings = file_findings + bandit
    if pool == "security":
        audited = [f for dep in dependencies for f in dep.get("files", [])]
        dependency_bandit = [_floored(f) for f in run_bandit(audited)]
        record["bandit"]["scanned"] += [f["path"] for f in audited if f["path"].lower().endswith(".py")]
        record["bandit"]["findings"] += len(dependency_bandit)
        tool_findings += dependency_bandit
    if pool == "database":
        reports = {}
        for item in files:
            if PurePosixPath(item["path"]).suffix.lower() != ".sql" or is_migration(item["path"]):
                continue  # a migration alone changes tables it does not make: checked below
            report = check_schema(item["content"], path=item["path"])
            reports[item["path"]] = report.as_dict()
            tool_findings += report.findings
            tool_findings += [
                Finding(
                    "high",
                    f"Schema does not apply: {error}",
                    file=item["path"],
                    source="schema",
                    rule="schema-apply",
                    recommendation="Fix the statement so the schema applies.",
                )
                for error in report.errors
                if not report.applied
            ]
        migrations = check_migrations({f["path"]: f["content"] for f in files}, base_files or {})
        for path, report in migrations.items():
            tool_findings += report.pop("findings")
            report["accepted"] = report["applied"] and not any(
                f.severity in BLOCKING_SEVERITIES
                for f in tool_findings
                if f.file == path and f.source == "schema"
            )
        record["schema"] = reports
        if migrations:
            record["migrations"] = migrations
        checked = [*reports.values(), *migrations.values()]
        record["schema_accepted"] = all(r["accepted"] for r in checked) if checked else None
    record["passed"] = not any(f.severity in BLOCKING_SEVERITIES for f in tool_findings)
    return {
        **reply,
        "findings": reply.get("findings", []) + [f.as_dict() for f in tool_findings],
        "verification": record,
    }
