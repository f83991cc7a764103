"""Projects live in git (DESIGN.md, "Projects live in git").

A project is (client, name); its files live in a git repository, the authoritative store of the
project's files. Hosts share no disk: the repository's objects (`GitObject`) and its `main`
(`Project.head`) live in the database, and each host works in a bare copy under
`OPENCLAW_REPOS_DIR/<client id>/<name>.git`, into which it copies the objects it lacks before
reading (`sync`) and from which it stores every commit it makes (`push`).

- Planning records the head of `main` as the execution's `base_commit` (none for an empty project)
  and shows the PM the files there.
- A task starts from the commits of what it builds on (`task_start`): the lineage heads of its
  dependencies, the version a remediation fixes, both sides of a merge conflict, else the base.
  Its workspace is that tree; its output is a commit on top of it (`commit_output`), authored by
  its agent, on `executions/<execution>/<task>`.
- Landing (`land`) merges the lineage heads three-way onto the current `main`, in the order they
  finished (a dependency before its dependents), makes the execution's merge commit
  (`result_commit`), tags it `exec-<execution>` and moves `main` by compare-and-set on the
  project's row: when another execution moved `main` meanwhile, it merges again onto the new head.
  The project's contract moves in the same update: the contract read with that head, amended by
  the execution's plan (`effective_contract` is the same on top of any stored contract).

Merge conflicts between the tasks of one execution are found as results arrive
(`executions.merge_conflicts`).
"""

import functools
import logging
import os
import re
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pygit2
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from pools import git_store
from pools.contracts.contract import amend, project_part

from .models import Client, Execution, GitObject, Project, Task
from .states import SUPERSEDING_KINDS, TaskStatus

log = logging.getLogger("openclaw.projects")

MAX_NAME_CHARS = 100
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LAND_ATTEMPTS = 20  # merges onto a main that keeps moving before landing gives up
MERGE_AUTHOR = "OpenClaw"


class ProjectError(Exception):
    """A project whose repository cannot be used (missing, corrupt, locked); the message says why."""


def git_errors(function):
    """A git failure (a corrupt, unreadable or locked repository) raised as a ProjectError that says so."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (pygit2.GitError, git_store.StoreError, OSError, KeyError, ValueError) as exc:
            raise ProjectError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def name_problem(name: object) -> str | None:
    """Why a project name is refused, or None. Names become folder names: no path tricks."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if "\x00" in name:
        return "must not contain NUL"
    if len(name) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if "/" in name or "\\" in name:
        return "must not contain a slash"
    if ".." in name:
        return "must not contain '..'"
    if not NAME_PATTERN.match(name):
        return "letters, digits and . _ - only, starting with a letter or digit"
    if name.lower().endswith((".git", ".lock")):
        return "must not end with .git or .lock"
    return None


def repository_path(client_id: int, name: str) -> Path:
    problem = name_problem(name)
    if problem:
        raise ProjectError(f"project name {name!r} {problem}")
    return Path(settings.OPENCLAW_REPOS_DIR) / str(int(client_id)) / f"{name}.git"


def repository(client_id: int, name: str, *, create: bool = True) -> pygit2.Repository:
    try:
        return git_store.open_repository(repository_path(client_id, name), create=create)
    except git_store.StoreError as exc:
        raise ProjectError(str(exc)) from exc


def project_of(client_id: int, name: str) -> Project:
    project, _ = Project.objects.get_or_create(client_id=client_id, name=name)
    return project


def open_project(
    client_id: int, name: str, *, sync_objects: bool = True
) -> tuple[pygit2.Repository, Project]:
    """This host's copy of the project's repository, with the objects other hosts wrote copied in
    (unless `sync_objects` is off: a writer that has just synced), and the project's row."""
    project = project_of(client_id, name)
    repo = repository(client_id, name)
    if sync_objects:
        sync(repo, project)
    return repo, project


def repository_of(execution: Execution, *, sync_objects: bool = True) -> pygit2.Repository:
    """This host's copy of the execution's project (its objects synced unless told otherwise)."""
    return open_project(execution.client_id, execution.project, sync_objects=sync_objects)[0]


# ---------------------------------------------------------------- objects across hosts

SYNC_MARK = "openclaw-synced-seq"  # in the repository folder: the last object copied from the database
BATCH = 500


def sync(repo: pygit2.Repository, project: Project) -> int:
    """Copy in the project's objects this repository lacks from the database, in `seq` order, and
    remember how far it got; how many were new here."""
    mark_file = Path(repo.path) / SYNC_MARK
    # The mark names the project's row too: a folder left from another database starts over.
    who = f"{project.pk}@{project.created_at.timestamp():.6f}"
    try:
        owner, _, seq = mark_file.read_text().strip().rpartition(":")
        mark = int(seq) if owner == who else 0
    except (FileNotFoundError, ValueError):
        mark = 0
    copied, last = 0, mark
    rows = (
        GitObject.objects.filter(project=project, seq__gt=mark)
        .order_by("seq")
        .values_list("seq", "oid", "kind", "data")
    )
    for seq, oid, kind, data in rows.iterator(chunk_size=BATCH):
        if not git_store.has_object(repo, oid):
            git_store.write_object(repo, kind, zlib.decompress(bytes(data)))
            copied += 1
        last = seq
    if last != mark:
        partial = mark_file.with_name(f"{SYNC_MARK}.{os.getpid()}.{threading.get_ident()}")
        partial.write_text(f"{who}:{last}")
        os.replace(partial, mark_file)
    return copied


@dataclass
class NewObjects:
    """Objects of a host's commits that the database lacks: (id, type, zlib data) each."""

    project_id: int
    rows: list[tuple[str, int, bytes]]


def push(repo: pygit2.Repository, project: Project, commits: list[str]) -> int:
    """Store in the database the objects of these commits that it lacks; how many were new."""
    return store_objects(new_objects(repo, project, commits))


def new_objects(repo: pygit2.Repository, project: Project, commits: list[str]) -> NewObjects:
    """The objects of these commits' snapshots that the database lacks (their parents are stored
    already: every commit is stored when made)."""
    oids = list(dict.fromkeys(oid for commit in commits for oid in git_store.snapshot_objects(repo, commit)))
    stored: set[str] = set()
    for start in range(0, len(oids), BATCH):
        stored.update(
            GitObject.objects.filter(project=project, oid__in=oids[start : start + BATCH]).values_list(
                "oid", flat=True
            )
        )
    new = []
    for oid in oids:
        if oid not in stored:
            kind, data = git_store.read_object(repo, oid)
            new.append((oid, kind, zlib.compress(data, 6)))
    return NewObjects(project.pk, new)


def store_objects(new: NewObjects) -> int:
    """Number and store the objects, in the caller's transaction if any. The project's row is held
    from the numbering to the commit, so `seq` commits in order: take it last (every transaction
    that takes it takes no lock after it)."""
    if not new.rows:
        return 0
    first = 1 - len(new.rows)
    with transaction.atomic(savepoint=False):
        Project.objects.filter(pk=new.project_id).update(objects_seq=F("objects_seq") + len(new.rows))
        first += Project.objects.filter(pk=new.project_id).values_list("objects_seq", flat=True).get()
        GitObject.objects.bulk_create(
            [
                GitObject(project_id=new.project_id, seq=first + n, oid=oid, kind=kind, data=data)
                for n, (oid, kind, data) in enumerate(new.rows)
            ],
            ignore_conflicts=True,
            batch_size=BATCH,
        )
    return len(new.rows)


def materialize_refs(client_id: int, name: str) -> pygit2.Repository:
    """This host's copy with its refs as the database has them: `main`, a tag per landed
    execution, a branch per succeeded task (what a clone shows)."""
    repo, project = open_project(client_id, name)
    wanted: dict[str, str] = {}
    if project.head:
        wanted[git_store.MAIN] = project.head
    for execution_id, commit in (
        Execution.objects.filter(client_id=client_id, project=name)
        .exclude(result_commit="")
        .values_list("pk", "result_commit")
    ):
        wanted[f"refs/tags/exec-{execution_id}"] = commit
    for execution_id, key, commit in (
        Task.objects.filter(
            execution__client_id=client_id, execution__project=name, status=TaskStatus.SUCCEEDED
        )
        .exclude(commit="")
        .values_list("execution_id", "key", "commit")
    ):
        wanted[f"refs/heads/executions/{execution_id}/{key}"] = commit
    for ref, commit in wanted.items():
        if git_store.ref_target(repo, ref) != commit and git_store.has_object(repo, commit):
            git_store.set_ref(repo, ref, commit)
    return repo


def project_register(*, client: Client, name: str) -> Project:
    """The client's project of that name, created on first use (its repository with it)."""
    project, _ = Project.objects.get_or_create(client=client, name=name)
    return project


def clone_url(name: str) -> str:
    return f"{settings.OPENCLAW_PUBLIC_URL.rstrip('/')}/git/{name}.git"


# ---------------------------------------------------------------- planning


@dataclass
class Base:
    commit: str  # "" for an empty project
    files: list[tuple[str, int]]  # (path, size) at the commit
    contract: dict = field(default_factory=dict)  # the project's stored contract at the commit


@git_errors
def plan_base(execution: Execution) -> Base:
    """What an execution starts from: the head of its project's `main`, the files there and the
    project's contract (read with the head, from one row: they move together)."""
    repo, project = open_project(execution.client_id, execution.project)
    return Base(project.head, git_store.listing(repo, project.head or None), project_part(project.contract))


@git_errors
def base_files(execution: Execution) -> dict[str, str]:
    """The project's files where the execution started (`base_commit`); empty for a new project
    and for an execution from before projects lived in git."""
    if not (execution.project and execution.base_commit):
        return {}
    return git_store.files_at(repository_of(execution), execution.base_commit)


# ---------------------------------------------------------------- a task's commit


@dataclass
class Start:
    """Where a task's work starts: the commits it builds on and their merged tree, as files."""

    parents: list[str]
    tree: pygit2.Oid
    files: dict[str, str]
    conflicts: list[git_store.ConflictedFile] = field(default_factory=list)


def lineage_head(root: Task) -> Task | None:
    """The latest succeeded version of a task's lineage (the task, or its latest remediation or
    revision), or None."""
    versions = [root] + list(Task.objects.filter(parent=root, kind__in=SUPERSEDING_KINDS))
    done = [t for t in versions if t.status == TaskStatus.SUCCEEDED and t.commit]
    return max(done, key=lambda t: (t.finished_at, t.pk)) if done else None


def start_commits(task: Task, dependencies: list[dict]) -> list[str]:
    """The commits a task's work starts from, before merging: a merge resolution starts from both
    sides; a remediation or revision from the latest version of what it replaces; anything else
    from its dependencies' lineage heads, else the execution's base."""
    merging = task.context.get("merge") or {}
    if merging.get("ours") and merging.get("theirs"):
        return [merging["ours"], merging["theirs"]]
    commits = []
    if task.kind in SUPERSEDING_KINDS and task.parent_id:
        head = lineage_head(Task.objects.get(pk=task.parent_id))
        if head is not None:
            commits.append(head.commit)
    commits += [dep["commit"] for dep in dependencies if dep.get("commit")]
    if not commits and task.execution.base_commit:
        commits.append(task.execution.base_commit)
    return commits


@git_errors
def task_start(task: Task, dependencies: list[dict]) -> Start:
    """The task's starting tree: its start commits merged (for a conflict, the files it has to
    resolve hold git's conflict markers)."""
    repo = repository_of(task.execution)
    merging = task.context.get("merge") or {}
    labels = tuple(merging.get("labels") or ("ours", "theirs"))
    parents = git_store.independent(repo, start_commits(task, dependencies))
    if not parents:
        tree = git_store.overlay(repo, None, {})
        return Start([], tree, {})
    current, conflicts = parents[0], []
    tree = git_store.tree_of(repo, current).id
    for other in parents[1:]:
        merged = git_store.merge(repo, current, other, labels=labels)
        conflicts += merged.conflicts
        tree = merged.tree
        # The next merge's base is found from this one.
        current = git_store.create_commit(
            repo,
            tree=tree,
            parents=[current, other],
            author=(MERGE_AUTHOR, "merge@openclaw"),
            message="merge\n",
        )
    carried = set(merging.get("keep_ours", []))
    if carried:
        # Paths the resolving lineage carries from its dependencies: main's version (`ours`); their
        # own lineages bring their work to main.
        mains = {
            c.path: git_store.blob_at(repo, merging["ours"], c.path) for c in conflicts if c.path in carried
        }
        tree = git_store.overlay(
            repo,
            tree,
            {path: git_store.text(repo[blob].data) if blob else None for path, blob in mains.items()},
        )
        conflicts = [c for c in conflicts if c.path not in carried]
    files = git_store.files_of_tree(repo, tree)
    if merging:  # the files it has to resolve show both sides; anyone else gets the later one's
        files.update((c.path, c.marked) for c in conflicts)
    return Start(parents, tree, files, conflicts)


def author_of(task: Task, model: str) -> tuple[str, str]:
    return f"{task.pool} agent ({model or 'unknown model'})", f"{task.key}@{task.execution_id}.openclaw"


def branch_of(task: Task) -> str:
    return f"refs/heads/executions/{task.execution_id}/{task.key}"


@git_errors
def commit_output(
    task: Task, start: Start, files: list[dict], summary: str, model: str, removed: list[str] = ()
) -> tuple[str, NewObjects]:
    """A commit of the task's output on top of where it started, and its objects the database
    lacks, to store with the success (`attempts.attempt_succeed`); its branch moves once the
    success is recorded (`publish_branch`)."""
    execution = task.execution
    repo, project = open_project(execution.client_id, execution.project, sync_objects=False)
    changes: dict[str, str | None] = dict.fromkeys(removed)  # an ownership fix moves files away
    changes.update((f["path"], f["content"]) for f in files)
    tree = git_store.overlay(repo, start.tree, changes)
    message = (summary or task.description).strip() + "\n"
    commit = git_store.create_commit(
        repo, tree=tree, parents=start.parents, author=author_of(task, model), message=message
    )
    return commit, new_objects(repo, project, [commit])


def publish_branch(task: Task, commit: str) -> None:
    git_store.set_ref(repository_of(task.execution, sync_objects=False), branch_of(task), commit)


# ---------------------------------------------------------------- landing


@dataclass
class Landing:
    commit: str  # "" when it stopped at a conflict with main
    conflicts: list[tuple[str, str, git_store.ConflictedFile]]  # (ours label, theirs label, file)
    merges: int  # how many times main had to be merged again
    main: str = ""  # the main it met, when it stopped
    contract: dict = field(default_factory=dict)  # the project's contract at that main


def amendment_of(execution: Execution) -> dict:
    """The endpoints and tables an execution's plan adds or redefines (for an execution planned
    before projects kept a contract: its whole contract)."""
    return project_part(execution.contract_amendment or execution.contract)


def effective_contract(execution: Execution, stored: dict) -> dict:
    """The contract an execution builds to and is checked against on top of a project contract:
    the stored one amended by the execution's plan, with the execution's ownership."""
    return {
        **amend(stored, amendment_of(execution)),
        "ownership": dict((execution.contract or {}).get("ownership", {})),
    }


def lineage_heads(execution: Execution) -> list[Task]:
    """The latest succeeded version of each lineage that has a commit, in the order they finished
    (a dependency before its dependents)."""
    tasks = [t for t in execution.tasks.all() if t.status == TaskStatus.SUCCEEDED and t.commit]
    heads: dict[int, Task] = {}
    for task in tasks:
        root = task.parent_id if task.kind in SUPERSEDING_KINDS and task.parent_id else task.pk
        current = heads.get(root)
        if current is None or (task.finished_at, task.pk) > (current.finished_at, current.pk):
            heads[root] = task
    return sorted(heads.values(), key=lambda t: (t.finished_at, t.pk))


MAIN_LABEL = "main"


def merge_heads(repo: pygit2.Repository, onto: str | None, heads: list[Task], base: str | None = None):
    """Merge the heads one by one onto `onto`: (tree, conflicts). A conflicted path keeps the later
    head's version. Each conflict's `ours` is named for whoever wrote that version: an earlier
    head that changed the path, else `main` (another execution's work, when `onto` moved past
    `base`)."""
    current, conflicts, merged_so_far = onto, [], []
    tree = git_store.tree_of(repo, onto).id if onto else git_store.overlay(repo, None, {})
    for head in heads:
        merged = git_store.merge(
            repo, current, head.commit, labels=(MAIN_LABEL, head.key), unchanged_from=onto
        )
        for conflict in merged.conflicts:
            conflicts.append((owner_of(repo, conflict, merged_so_far, base, onto), head.key, conflict))
        tree = merged.tree
        if current is None or git_store.is_ancestor(repo, current, head.commit):
            current = head.commit
        elif not git_store.is_ancestor(repo, head.commit, current):
            current = git_store.create_commit(
                repo,
                tree=tree,
                parents=[current, head.commit],
                author=(MERGE_AUTHOR, "merge@openclaw"),
                message="merge\n",
            )
        merged_so_far.append(head)
    return tree, conflicts


def owner_of(
    repo, conflict: git_store.ConflictedFile, earlier: list[Task], base: str | None, onto: str | None
) -> str:
    at_base = git_store.blob_at(repo, base, conflict.path)
    if conflict.ours_id != at_base and conflict.ours_id == git_store.blob_at(repo, onto, conflict.path):
        # main's version, whichever earlier head carries it (a resolution with main merged main in)
        return MAIN_LABEL
    for head in reversed(earlier):
        blob = git_store.blob_at(repo, head.commit, conflict.path)
        if blob == conflict.ours_id and blob != at_base:
            return head.key
    return MAIN_LABEL


@git_errors
def land(execution: Execution, *, stop_on_main_conflict: bool = False) -> Landing:
    """The execution's merge commit on `main`, tagged `exec-<execution>`: its lineage heads merged
    onto the current head, which moves by compare-and-set on the project's row (merged again
    while another execution moves it).

    With `stop_on_main_conflict`, a conflict with work that reached `main` after the execution's
    base is not landed: the Landing has no commit, its conflicts, and the `main` it met."""
    repo, project = open_project(execution.client_id, execution.project)
    heads = lineage_heads(execution)
    landed = Execution.objects.filter(pk=execution.pk).values_list("result_commit", flat=True).first()
    if landed and all(git_store.is_ancestor(repo, h.commit, landed) for h in heads):
        return Landing(landed, [], 0)  # a redelivered aggregation: landed already
    merges = 0
    while True:
        main = project.head or None
        tree, conflicts = merge_heads(repo, main, heads, execution.base_commit or None)
        if stop_on_main_conflict and any(ours == MAIN_LABEL for ours, _, _ in conflicts):
            return Landing("", conflicts, merges, main=main or "", contract=project_part(project.contract))
        parents = git_store.independent(repo, ([main] if main else []) + [h.commit for h in heads])
        if main and parents[0] != main:
            parents.insert(0, main)  # main stays the first parent, even when a head contains it
        commit = git_store.create_commit(
            repo,
            tree=tree,
            parents=parents,
            author=(MERGE_AUTHOR, f"openclaw@{execution.pk}.openclaw"),
            message=merge_message(execution, heads),
        )
        objects = new_objects(repo, project, [commit])
        # This host's ref first: a repository it cannot write fails the landing before main moves.
        git_store.set_ref(repo, git_store.MAIN, commit)
        # The project's contract moves with main: it was read with this head, from the same row.
        contract = project_part(amend(project.contract, amendment_of(execution)))
        with transaction.atomic():  # main moves with the commit's objects and the execution's result
            if Project.objects.filter(pk=project.pk, head=main or "").update(
                head=commit, contract=contract, updated_at=timezone.now()
            ):
                store_objects(objects)
                Execution.objects.filter(pk=execution.pk).update(result_commit=commit)
                break
        merges += 1
        if merges >= LAND_ATTEMPTS:
            raise ProjectError(f"main of {execution.project} kept moving; {execution.pk} did not land")
        log.info("main of %s moved while %s landed; merging again", execution.project, execution.pk)
        project.refresh_from_db(fields=["head", "contract"])
        sync(repo, project)
    git_store.set_ref(repo, f"refs/tags/exec-{execution.pk}", commit)
    for head in heads:
        git_store.set_ref(repo, branch_of(head), head.commit)
    execution.result_commit = commit
    return Landing(commit, conflicts, merges)


def merge_message(execution: Execution, heads: list[Task]) -> str:
    first_line = execution.message.strip().splitlines()[0][:72] if execution.message.strip() else ""
    lines = [f"Execution {execution.pk}: {first_line}", ""]
    lines += [f"- {h.key}: {(h.result.get('summary') or h.description).splitlines()[0][:100]}" for h in heads]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reads


@git_errors
def result_files(execution: Execution) -> dict[str, str] | None:
    """The project's files as the execution left them: the tree at `result_commit`, or, before it
    landed, its work so far merged onto its base. None when nothing of it is in git (an execution
    from before projects lived in git)."""
    heads = lineage_heads(execution)
    if not (execution.result_commit or execution.base_commit or heads):
        return None
    repo = repository_of(execution)
    if execution.result_commit:
        return git_store.files_at(repo, execution.result_commit)
    base = execution.base_commit or None
    tree, _ = merge_heads(repo, base, heads, base)
    return git_store.files_of_tree(repo, tree)


@git_errors
def execution_diff(execution: Execution) -> tuple[str, dict]:
    """The unified diff base_commit..result_commit and its stats."""
    repo = repository_of(execution)
    patch = git_store.diff(repo, execution.base_commit or None, execution.result_commit)
    return patch.patch or "", git_store.diff_stats(patch)


@git_errors
def task_diff(execution: Execution, task: Task) -> str:
    """What a task's commit changed from its first parent (its start), as a unified diff."""
    repo = repository_of(execution)
    commit = repo[task.commit]
    parent = str(commit.parents[0].id) if commit.parents else None
    return git_store.diff(repo, parent, task.commit).patch or ""


AUTHOR_EMAIL = re.compile(r"^(?P<task>[^@]+)@(?P<execution>.+)\.openclaw$")


@git_errors
def history(client_id: int, name: str, limit: int = 200) -> list[dict]:
    """main's commits, newest first, each with the execution and task it came from."""
    repo, project = open_project(client_id, name)
    out = []
    for commit in git_store.history(repo, project.head or None, limit):
        match = AUTHOR_EMAIL.match(commit.author.email or "")
        task = match["task"] if match and match["task"] != "openclaw" else None
        out.append(
            {
                "commit": str(commit.id),
                "message": commit.message.strip(),
                "author": commit.author.name,
                "execution_id": match["execution"] if match else None,
                "task": task,
                "time": datetime.fromtimestamp(commit.author.time, tz=UTC).isoformat(),
            }
        )
    return out


@git_errors
def head_files(client_id: int, name: str, commit: str | None = None) -> list[tuple[str, int]]:
    repo, project = open_project(client_id, name)
    return git_store.listing(repo, commit or project.head or None)


@git_errors
def file_at(client_id: int, name: str, commit: str | None, path: str) -> str | None:
    """One file's text at a commit of the project (default: main), or None when it has none."""
    repo, project = open_project(client_id, name)
    blob = git_store.blob_at(repo, commit or project.head or None, path)
    return git_store.text(repo[blob].data) if blob else None


def executions_count(project: Project) -> int:
    return Execution.objects.filter(client_id=project.client_id, project=project.name).count()
