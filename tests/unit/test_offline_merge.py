"""The offline agent's merge resolution: what it writes must pass the verifiers, as a model's must.

The conflicts are made by the real `git merge` of two schemas that share their first lines, so the
markers split statements the way they do in a project's history."""

import subprocess

from pools import offline
from pools.verifiers.schema import check_schema


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout


def conflicted(tmp_path, ours: str, theirs: str) -> str:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    git(repo, "checkout", "-q", "-b", "task_3")
    (repo / "schema.sql").write_text(theirs)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "schema.sql").write_text(ours)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "ours")
    git(repo, "merge", "-q", "task_3")
    content = (repo / "schema.sql").read_text()
    assert offline.has_conflict_markers(content)
    return content


def schema_of(tables: list[str]) -> str:
    meta = {"contract": {"tables": [{"name": t, "columns": offline.table_columns(t)} for t in tables]}}
    return offline.schema(meta, set())["files"][0]["content"]


def test_a_schema_conflict_resolves_into_a_schema_that_applies(tmp_path):
    # A follow-up on a project whose main gained orders meanwhile: the two sides share payments.
    ours, theirs = schema_of(["orders", "payments"]), schema_of(["restaurants", "bookings", "payments"])
    content = conflicted(tmp_path, ours, theirs)
    assert not check_schema(offline.one_side(content, {"ours", "theirs"})).applied  # lines interleaved

    [resolved] = offline.resolve_merge(
        {"target_files": [{"path": "database/schema.sql", "content": content}]}
    )["files"]
    report = check_schema(resolved["content"])
    assert report.accepted, report.errors
    assert set(report.tables) == {"users", "orders", "payments", "restaurants", "bookings"}
