"""The git store: trees and commits without a work tree, three-way merges, compare-and-swap refs."""

import os
import subprocess
import time
from pathlib import Path

import pygit2
import pytest

from pools import git_store

AGENT = ("codegen agent (m)", "task_1@exec_1.openclaw")


@pytest.fixture
def repo(tmp_path):
    return git_store.open_repository(tmp_path / "demo.git")


def commit(repo, files, parents=(), base=None):
    tree = git_store.overlay(repo, git_store.tree_of(repo, base).id if base else None, files)
    return git_store.create_commit(repo, tree=tree, parents=list(parents), author=AGENT, message="m")


def test_a_new_repository_is_bare_with_an_unborn_main(repo, tmp_path):
    assert repo.is_bare and git_store.ref_target(repo) is None
    again = git_store.open_repository(tmp_path / "demo.git")
    assert again.path == repo.path


def test_a_missing_repository_is_not_created_when_asked_not_to(tmp_path):
    with pytest.raises(git_store.StoreError):
        git_store.open_repository(tmp_path / "none.git", create=False)


def test_commits_overlay_files_on_their_start(repo):
    base = commit(repo, {"a.txt": "1\n", "src/b.py": "x = 1\n"})
    child = commit(repo, {"src/b.py": "x = 2\n", "c.md": "# c\n"}, parents=[base], base=base)
    assert git_store.files_at(repo, child) == {"a.txt": "1\n", "src/b.py": "x = 2\n", "c.md": "# c\n"}
    assert git_store.listing(repo, child) == [("a.txt", 2), ("c.md", 4), ("src/b.py", 6)]
    assert git_store.is_ancestor(repo, base, child) and not git_store.is_ancestor(repo, child, base)


def test_edits_of_different_lines_merge_cleanly(repo):
    base = commit(repo, {"app.py": "a\nb\nc\nd\ne\n"})
    left = commit(repo, {"app.py": "A\nb\nc\nd\ne\n"}, [base], base)
    right = commit(repo, {"app.py": "a\nb\nc\nd\nE\n", "new.py": "n\n"}, [base], base)
    merged = git_store.merge(repo, left, right)
    assert merged.conflicts == []
    files = git_store.files_of_tree(repo, merged.tree)
    assert files == {"app.py": "A\nb\nc\nd\nE\n", "new.py": "n\n"}


def test_a_side_that_left_a_path_as_mains_brings_nothing_new_there(repo):
    # Two lineages of one execution, each resolved against main: a criss-cross merge.
    base = commit(repo, {"schema.sql": "users\n", "app.py": "app\n"})
    main = commit(repo, {"schema.sql": "users\nreviews\n"}, [base], base)  # another execution landed
    tables = commit(repo, {"schema.sql": "users\norders\n"}, [base], base)
    tables_fixed = commit(repo, {"schema.sql": "users\nreviews\norders\n"}, [tables, main], main)
    code = commit(repo, {"app.py": "app v2\n"}, [tables], tables)  # built on the tables' work
    code_fixed = commit(repo, {"schema.sql": "users\nreviews\n", "app.py": "app v2\n"}, [main, code], main)

    assert [c.path for c in git_store.merge(repo, tables_fixed, code_fixed).conflicts] == ["schema.sql"]
    merged = git_store.merge(repo, tables_fixed, code_fixed, unchanged_from=main)
    assert merged.conflicts == []
    files = git_store.files_of_tree(repo, merged.tree)
    assert files == {"schema.sql": "users\nreviews\norders\n", "app.py": "app v2\n"}


def test_edits_of_the_same_lines_conflict_with_both_sides_and_the_base(repo):
    base = commit(repo, {"app.py": "a\nb\nc\n"})
    left = commit(repo, {"app.py": "a\nLEFT\nc\n"}, [base], base)
    right = commit(repo, {"app.py": "a\nRIGHT\nc\n"}, [base], base)
    merged = git_store.merge(repo, left, right, labels=("task_1", "task_2"))
    [conflict] = merged.conflicts
    assert (conflict.path, conflict.base, conflict.ours, conflict.theirs) == (
        "app.py",
        "a\nb\nc\n",
        "a\nLEFT\nc\n",
        "a\nRIGHT\nc\n",
    )
    assert conflict.marked == "a\n<<<<<<< task_1\nLEFT\n=======\nRIGHT\n>>>>>>> task_2\nc\n"
    assert conflict.hunks == [{"line": 2, "ours": "LEFT\n", "theirs": "RIGHT\n"}]
    assert git_store.files_of_tree(repo, merged.tree)["app.py"] == "a\nRIGHT\nc\n"  # theirs, for now


def test_two_root_commits_adding_one_file_differently_conflict(repo):
    left = commit(repo, {"app.py": "left\n"})
    right = commit(repo, {"app.py": "right\n"})
    [conflict] = git_store.merge(repo, left, right).conflicts
    assert conflict.base is None and conflict.hunks == [{"line": 1, "ours": "left\n", "theirs": "right\n"}]


def test_a_merge_with_an_ancestor_is_the_descendant(repo):
    base = commit(repo, {"a": "1\n"})
    child = commit(repo, {"a": "2\n"}, [base], base)
    for ours, theirs in ((base, child), (child, base), (None, child)):
        merged = git_store.merge(repo, ours, theirs)
        assert merged.conflicts == [] and git_store.files_of_tree(repo, merged.tree) == {"a": "2\n"}
    assert git_store.independent(repo, [base, child, child]) == [child]


@pytest.mark.parametrize("older", ["one", "two"])
def test_a_criss_cross_merge_uses_every_merge_base(repo, older):
    """Two commits that both merge `one` and `two` have both as merge bases; taking either alone
    (git's walk picks by commit time) turns a file only one side added into an add/add conflict."""
    base = commit(repo, {"README.md": "hi\n"})
    times = {"one": 1_700_000_000, "two": 1_700_000_000}
    times["two" if older == "one" else "one"] += 60

    def dated(files, parents, start, name):
        tree = git_store.overlay(repo, git_store.tree_of(repo, start).id, files)
        who = pygit2.Signature(*AGENT, times[name], 0)
        return str(repo.create_commit(None, who, who, name, tree, [pygit2.Oid(hex=p) for p in parents]))

    one = dated({"a.py": "a = 1\n"}, [base], base, "one")
    two = dated({"b.py": "b = 1\n"}, [base], base, "two")
    both = git_store.merge(repo, one, two)
    merged = git_store.create_commit(repo, tree=both.tree, parents=[one, two], author=AGENT, message="m")
    changed = commit(repo, {"a.py": "a = 2\n", "b.py": "b = 1\n"}, parents=[one, two], base=one)

    result = git_store.merge(repo, merged, changed)
    assert result.conflicts == []
    assert git_store.files_of_tree(repo, result.tree) == {
        "README.md": "hi\n",
        "a.py": "a = 2\n",
        "b.py": "b = 1\n",
    }


def test_a_snapshots_objects_are_the_commit_its_trees_and_blobs(repo, tmp_path):
    base = commit(repo, {"a.txt": "1\n", "src/b.py": "x = 1\n"})
    oids = git_store.snapshot_objects(repo, base)
    assert oids[0] == base and len(oids) == 5  # the commit, two trees, two blobs
    copy = git_store.open_repository(tmp_path / "copy.git")
    for oid in oids:
        assert git_store.write_object(copy, *git_store.read_object(repo, oid)) == oid
    assert git_store.files_at(copy, base) == {"a.txt": "1\n", "src/b.py": "x = 1\n"}


def test_the_git_cli_reads_what_the_store_wrote(repo, tmp_path):
    base = commit(repo, {"README.md": "hello\n"})
    git_store.set_ref(repo, git_store.MAIN, base)
    out = subprocess.run(
        ["git", "--git-dir", repo.path, "log", "--format=%an <%ae>", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "codegen agent (m) <task_1@exec_1.openclaw>\n"
    fsck = subprocess.run(["git", "--git-dir", repo.path, "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_diff_between_commits_is_a_unified_patch(repo):
    base = commit(repo, {"a.txt": "1\n2\n"})
    child = commit(repo, {"a.txt": "1\n3\n", "b.txt": "new\n"}, [base], base)
    patch = git_store.diff(repo, base, child)
    assert "-2\n+3\n" in patch.patch and "+++ b/b.txt" in patch.patch
    assert git_store.diff_stats(patch) == {"files_changed": 2, "insertions": 2, "deletions": 1}
    assert "+++ b/a.txt" in git_store.diff(repo, None, base).patch


def locked_ref(repo, name: str) -> tuple[str, str, Path]:
    """Two commits, the ref `name` at the first, and its lock file held (as by another writer)."""
    first = commit(repo, {"a.txt": "1\n"})
    second = commit(repo, {"a.txt": "2\n"}, parents=[first], base=first)
    git_store.set_ref(repo, name, first)
    lock = Path(repo.path) / f"{name}.lock"
    lock.write_text("")
    return first, second, lock


def test_a_ref_lock_left_by_a_killed_writer_does_not_block_the_ref_for_good(repo, monkeypatch):
    name = "refs/heads/executions/exec_1/task_2"
    # As a writer SIGKILLed between creating its lock and renaming it leaves it.
    _, second, lock = locked_ref(repo, name)
    monkeypatch.setattr(git_store, "REF_LOCK_WAIT_SEC", 0.05)
    with pytest.raises((pygit2.GitError, OSError)):  # a fresh lock is someone's write: not touched
        git_store.set_ref(repo, name, second)
    assert lock.exists()
    old = time.time() - git_store.STALE_REF_LOCK_SEC - 5
    os.utime(lock, (old, old))
    git_store.set_ref(repo, name, second)
    assert str(repo.references[name].target) == second
    assert not lock.exists()


def test_a_ref_write_waits_for_another_writers_lock_on_the_same_ref(repo, monkeypatch):
    name = "refs/heads/executions/exec_1/task_8"
    _, second, lock = locked_ref(repo, name)  # another process is writing the ref
    waits = []

    def the_other_writer_finishes(seconds):
        waits.append(seconds)
        if len(waits) == 3:
            lock.unlink()

    monkeypatch.setattr(git_store.time, "sleep", the_other_writer_finishes)
    git_store.set_ref(repo, name, second)
    assert str(repo.references[name].target) == second and len(waits) == 3


def test_a_ref_write_that_meets_the_same_commit_under_a_lock_is_done(repo, monkeypatch):
    name = "refs/heads/executions/exec_1/task_8"
    first, _, _ = locked_ref(repo, name)  # the other writer writes the same commit
    monkeypatch.setattr(git_store.time, "sleep", lambda seconds: pytest.fail("waited"))
    git_store.set_ref(repo, name, first)
    assert str(repo.references[name].target) == first
