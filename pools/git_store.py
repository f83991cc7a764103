"""Git repositories as a store of files: bare repositories written and merged with pygit2 (libgit2),
never through a work tree.

Pure operations on one repository at a time; what a project, a task or an execution is lives in
`executions.projects` (which keeps the objects and `main` in the database, so that any host can
use a repository). A Repository object is opened per operation and never shared between threads
(libgit2's repositories are not safe to use from two threads at once).
"""

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

MAIN = "refs/heads/main"
BLOB = pygit2.enums.FileMode.BLOB
MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")


class StoreError(Exception):
    """A repository that cannot be opened, read or written (missing, corrupt, locked)."""


def open_repository(path: Path, *, create: bool = True) -> pygit2.Repository:
    """The bare repository at `path`, created (with `main` as its head) when missing and `create`."""
    try:
        if (path / "HEAD").exists():
            return pygit2.Repository(str(path))
        if not create:
            raise StoreError(f"no repository at {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / f".{path.name}.init.lock"):
            if (path / "HEAD").exists():
                return pygit2.Repository(str(path))
            return pygit2.init_repository(str(path), bare=True, initial_head="main")
    except pygit2.GitError as exc:
        raise StoreError(f"repository {path.name} is unreadable: {exc}") from exc


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- reading


def ref_target(repo: pygit2.Repository, name: str = MAIN) -> str | None:
    """The commit a ref points at, or None when it does not exist (an empty project's `main`)."""
    ref = repo.references.get(name)
    return str(ref.resolve().target) if ref is not None else None


def tree_of(repo: pygit2.Repository, commit: str | None) -> pygit2.Tree | None:
    return repo[commit].peel(pygit2.Tree) if commit else None


def _walk(
    repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = ""
) -> Iterator[tuple[str, pygit2.Object]]:
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            yield from _walk(repo, repo[entry.id], f"{path}/")
        elif entry.type_str == "blob":
            yield path, entry


def listing(repo: pygit2.Repository, commit: str | None) -> list[tuple[str, int]]:
    """(path, size in bytes) of every file at a commit, in path order."""
    tree = tree_of(repo, commit)
    if tree is None:
        return []
    return sorted((path, repo[entry.id].size) for path, entry in _walk(repo, tree))


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def files_at(repo: pygit2.Repository, commit: str | None) -> dict[str, str]:
    """Every file at a commit as text (bytes that are not UTF-8 are replaced)."""
    tree = tree_of(repo, commit)
    if tree is None:
        return {}
    return {path: text(repo[entry.id].data) for path, entry in _walk(repo, tree)}


def files_of_tree(repo: pygit2.Repository, tree_id: pygit2.Oid) -> dict[str, str]:
    return {path: text(repo[entry.id].data) for path, entry in _walk(repo, repo[tree_id])}


def blob_at(repo: pygit2.Repository, commit: str | None, path: str) -> str:
    """The id of the file at `path` in a commit, or "" when it has none."""
    tree = tree_of(repo, commit)
    if tree is None:
        return ""
    try:
        return str(tree[path].id)
    except KeyError:
        return ""


def is_ancestor(repo: pygit2.Repository, ancestor: str, commit: str) -> bool:
    return ancestor == commit or repo.descendant_of(commit, ancestor)


def snapshot_objects(repo: pygit2.Repository, commit: str) -> list[str]:
    """The ids of a commit and of every tree and blob of its tree (not its parents')."""
    out = [commit]
    pending = [repo[commit].peel(pygit2.Tree)]
    while pending:
        tree = pending.pop()
        out.append(str(tree.id))
        for entry in tree:
            if entry.type_str == "tree":
                pending.append(repo[entry.id])
            elif entry.type_str == "blob":
                out.append(str(entry.id))
    return list(dict.fromkeys(out))


def read_object(repo: pygit2.Repository, oid: str) -> tuple[int, bytes]:
    """(git's type number, the raw content) of an object."""
    kind, data = repo.odb.read(oid)
    return int(kind), data


def write_object(repo: pygit2.Repository, kind: int, data: bytes) -> str:
    return str(repo.odb.write(kind, data))


def has_object(repo: pygit2.Repository, oid: str) -> bool:
    return oid in repo


# ---------------------------------------------------------------- writing


def overlay(repo: pygit2.Repository, tree_id: pygit2.Oid | None, files: dict[str, str | None]) -> pygit2.Oid:
    """A tree: `tree_id`'s files (none when None) with `files` written over them (None: the file is
    removed). Only the folders along the written paths are rebuilt; every other subtree is reused."""
    nested: dict = {}
    for path, content in files.items():
        *folders, name = path.split("/")
        level = nested
        for folder in folders:
            level = level.setdefault(folder, {})
            if not isinstance(level, dict):
                raise ValueError(f"{path}: a file is in the way of the folder {folder}")
        level[name] = content
    return _build(repo, repo[tree_id] if tree_id is not None else None, nested)


def _build(repo: pygit2.Repository, tree: pygit2.Tree | None, changes: dict) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name, change in changes.items():
        if isinstance(change, dict):
            existing = tree[name] if tree is not None and name in tree else None
            subtree = repo[existing.id] if existing is not None and existing.type_str == "tree" else None
            builder.insert(name, _build(repo, subtree, change), pygit2.enums.FileMode.TREE)
        elif change is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            builder.insert(name, repo.create_blob(change.encode()), BLOB)
    return builder.write()


def create_commit(
    repo: pygit2.Repository,
    *,
    tree: pygit2.Oid,
    parents: list[str],
    author: tuple[str, str],
    message: str,
    committer: tuple[str, str] | None = None,
) -> str:
    """A commit object (no ref moves); its id."""
    who = pygit2.Signature(*author)
    by = pygit2.Signature(*committer) if committer else who
    return str(repo.create_commit(None, who, by, message, tree, [pygit2.Oid(hex=p) for p in parents]))


# A ref's `.lock` file lives for the milliseconds of one write; one this old was left by a process
# killed while writing (SIGKILL, OOM), and every later write of that ref would fail on it.
STALE_REF_LOCK_SEC = 10.0
# How long a write waits for another writer's lock on the same ref to go.
REF_LOCK_WAIT_SEC = 2.0
REF_LOCK_RETRY_SEC = 0.005


def set_ref(repo: pygit2.Repository, name: str, commit: str) -> None:
    """Point a ref at a commit, whatever it pointed at. Two processes may write one ref at once,
    both with the commit the database holds (a task's worker publishing its branch while another
    restores the project's refs from the database): libgit2 fails the write that finds the other's
    lock, so that write waits for the lock to go (up to REF_LOCK_WAIT_SEC) unless the ref already
    points at the commit. A lock a killed writer left behind is removed."""
    deadline = time.monotonic() + REF_LOCK_WAIT_SEC
    while True:
        try:
            repo.references.create(name, pygit2.Oid(hex=commit), force=True)
            return
        except (pygit2.GitError, OSError):
            if ref_target(repo, name) == commit:
                return
            lock = Path(repo.path) / f"{name}.lock"
            try:
                stale = time.time() - lock.stat().st_mtime > STALE_REF_LOCK_SEC
            except FileNotFoundError:
                stale = False
            if stale:
                lock.unlink(missing_ok=True)
            elif time.monotonic() > deadline:
                raise
            else:
                time.sleep(REF_LOCK_RETRY_SEC)


# ---------------------------------------------------------------- merging


@dataclass
class ConflictedFile:
    """One path both sides changed in overlapping places (or added with different content)."""

    path: str
    base: str | None
    ours: str | None
    theirs: str | None
    marked: str  # the file with git's conflict markers, labelled with the sides' names
    hunks: list[dict] = field(default_factory=list)  # {"line", "ours", "theirs"} per conflicting region
    ours_id: str = ""
    theirs_id: str = ""

    def as_evidence(self, limit: int = 4000) -> dict:
        return {
            "path": self.path,
            "hunks": [{k: v[:limit] if isinstance(v, str) else v for k, v in h.items()} for h in self.hunks],
        }


@dataclass
class MergeResult:
    """The merged tree (a conflicted path holds `theirs`'s version) and the conflicts found."""

    tree: pygit2.Oid
    conflicts: list[ConflictedFile]


def hunks_of(marked: str) -> list[dict]:
    """The conflicting regions of a file with conflict markers: where each starts, and both sides."""
    hunks, side, current = [], None, {}
    for number, line in enumerate(marked.splitlines(), start=1):
        if line.startswith("<<<<<<< ") or line == "<<<<<<<":
            side, current = "ours", {"line": number, "ours": "", "theirs": ""}
        elif side and line.startswith("||||||| "):
            side = "base"
        elif side and line == "=======":
            side = "theirs"
        elif side and (line.startswith(">>>>>>> ") or line == ">>>>>>>"):
            hunks.append(current)
            side = None
        elif side in ("ours", "theirs"):
            current[side] += line + "\n"
    return hunks


def _relabel(marked: str, labels: tuple[str, str]) -> str:
    lines = []
    for line in marked.splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            line = f"<<<<<<< {labels[0]}\n"
        elif line.startswith(">>>>>>> "):
            line = f">>>>>>> {labels[1]}\n"
        lines.append(line)
    return "".join(lines)


def merge(
    repo: pygit2.Repository,
    ours: str | None,
    theirs: str | None,
    *,
    labels: tuple[str, str] = ("ours", "theirs"),
    unchanged_from: str | None = None,
) -> MergeResult:
    """Three-way merge of two commits (their merge bases as the ancestor; none: the empty tree).
    `unchanged_from`: a commit; where theirs has exactly that commit's version of a conflicted path,
    theirs brings nothing new there and ours is kept, with no conflict. (Criss-crossed merges of
    the same work, each with main merged in, can conflict on a path one side left as main's.)"""
    if ours is None:
        return MergeResult(repo[theirs].peel(pygit2.Tree).id if theirs else overlay(repo, None, {}), [])
    if theirs is None:
        return MergeResult(repo[ours].peel(pygit2.Tree).id, [])
    # One merge-base walk decides it all: an ancestor on either side, or the three trees to merge.
    base = repo.merge_base(ours, theirs)
    if base is not None and str(base) == ours:
        return MergeResult(repo[theirs].peel(pygit2.Tree).id, [])
    if base is not None and str(base) == theirs:
        return MergeResult(repo[ours].peel(pygit2.Tree).id, [])
    if base is None:
        ancestor = repo[overlay(repo, None, {})]
        index = repo.merge_trees(ancestor, repo[ours].peel(pygit2.Tree), repo[theirs].peel(pygit2.Tree))
    else:
        # libgit2's recursive merge: criss-crossed heads (two merges of the same tasks) have several
        # merge bases, and any one of them alone sees the other's files as added on both sides.
        index = repo.merge_commits(ours, theirs)
    conflicts = []
    if index.conflicts is not None:
        for base, mine, other in list(index.conflicts):
            path = (mine or other or base).path
            if (
                unchanged_from
                and mine is not None
                and other is not None
                and str(other.id) == blob_at(repo, unchanged_from, path)
            ):
                del index.conflicts[path]
                index.add(pygit2.IndexEntry(path, mine.id, mine.mode))
                continue
            if mine is not None and other is not None:
                marked = _relabel(
                    text(repo.merge_file_from_index(base, mine, other).contents.encode()), labels
                )
            else:  # changed on one side, deleted on the other
                kept = mine or other
                marked = text(repo[kept.id].data)
            conflicts.append(
                ConflictedFile(
                    path=path,
                    base=text(repo[base.id].data) if base else None,
                    ours=text(repo[mine.id].data) if mine else None,
                    theirs=text(repo[other.id].data) if other else None,
                    marked=marked,
                    hunks=hunks_of(marked),
                    ours_id=str(mine.id) if mine else "",
                    theirs_id=str(other.id) if other else "",
                )
            )
            del index.conflicts[path]
            keep = other or mine
            index.add(pygit2.IndexEntry(path, keep.id, keep.mode))
    return MergeResult(index.write_tree(repo), conflicts)


def independent(repo: pygit2.Repository, commits: list[str]) -> list[str]:
    """The commits none of the others contains, in their order, each once."""
    unique = list(dict.fromkeys(commits))
    return [c for c in unique if not any(o != c and is_ancestor(repo, c, o) for o in unique)]


# ---------------------------------------------------------------- history and diffs


def history(repo: pygit2.Repository, commit: str | None, limit: int = 200) -> list[pygit2.Commit]:
    if not commit:
        return []
    walker = repo.walk(pygit2.Oid(hex=commit), pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    out = []
    for item in walker:
        out.append(item)
        if len(out) >= limit:
            break
    return out


def diff(repo: pygit2.Repository, old: str | None, new: str | None) -> pygit2.Diff:
    """The changes from `old` to `new` (None: the empty tree)."""
    empty = repo[overlay(repo, None, {})]
    old_tree = tree_of(repo, old) or empty
    new_tree = tree_of(repo, new) or empty
    return repo.diff(old_tree, new_tree, context_lines=3)


def diff_stats(patch: pygit2.Diff) -> dict:
    stats = patch.stats
    return {
        "files_changed": stats.files_changed,
        "insertions": stats.insertions,
        "deletions": stats.deletions,
    }
