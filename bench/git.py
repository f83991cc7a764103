"""Projects in git: commit + merge time per task on a 200-file project, and the clone of a
1,000-commit project.

Tasks come in executions of 8, each landing on main before the next starts.

Per task, what the engine does with git for one succeeded task of a follow-up on a 200-file
project (3 files of ~2 KB written, one of them an edit of an existing file): the task's commit on
top of the base (`git_store.overlay` + `create_commit`), the three-way merge with a sibling task's
commit that `merge_conflicts.on_commit` makes when their paths overlap (different lines: clean),
and the task's step of landing (its head merged into the execution's merge so far). Measured on
bare repositories under var/bench/git, with pygit2, in this process.

Clone: `git clone --no-local` (git's pack protocol through upload-pack, as the HTTP endpoint runs
it, without the HTTP) of a project whose main has 1,000 commits (one file changed each).
"""

import shutil
import subprocess
import time
import uuid

from . import harness

TARGET_P99_MS = 50.0
FILES = 200
PER_EXECUTION = 8  # tasks per execution: each execution lands on main before the next starts


def source(n: int, version: int = 0) -> str:
    lines = [
        f"def handler_{n}_{i}(payload):\n    return {{'n': {n}, 'i': {i}, 'v': {version}}}\n"
        for i in range(40)
    ]
    return "".join(lines)


def run(ctx) -> dict:
    from pools import git_store

    folder = harness.VAR / "git" / uuid.uuid4().hex
    tasks = 50 if ctx.quick else 200
    try:
        repo = git_store.open_repository(folder / "project.git")
        author = ("codegen agent (bench)", "task@bench.openclaw")
        base_tree = git_store.overlay(repo, None, {f"src/module_{n}.py": source(n) for n in range(FILES)})
        base = git_store.create_commit(repo, tree=base_tree, parents=[], author=author, message="base\n")
        git_store.set_ref(repo, git_store.MAIN, base)
        durations, commits, merges, steps, lands = [], [], [], [], []
        for e in range(tasks // PER_EXECUTION):
            main = git_store.ref_target(repo)
            main_tree = git_store.tree_of(repo, main).id
            sibling, merged_so_far = None, main
            heads = []
            for k in range(PER_EXECUTION):
                t = e * PER_EXECUTION + k
                files = {
                    f"src/module_{t % FILES}.py": source(t % FILES, version=t),  # an edit of an existing file
                    f"src/new_{t}.py": source(1000 + t),
                    f"tests/test_new_{t}.py": f"from src.new_{t} import handler_{1000 + t}_0\n",
                }
                started = time.perf_counter()
                tree = git_store.overlay(repo, main_tree, files)
                commit = git_store.create_commit(
                    repo, tree=tree, parents=[main], author=author, message=f"{t}\n"
                )
                committed = time.perf_counter()
                if sibling is not None:
                    assert not git_store.merge(repo, sibling, commit).conflicts
                checked = time.perf_counter()
                step = git_store.merge(repo, merged_so_far, commit)
                merged_so_far = git_store.create_commit(
                    repo, tree=step.tree, parents=[merged_so_far, commit], author=author, message="merge\n"
                )
                done = time.perf_counter()
                commits.append(committed - started)
                merges.append(checked - committed)
                steps.append(done - checked)
                durations.append(done - started)
                sibling = commit
                heads.append(commit)
            started = time.perf_counter()
            result = git_store.create_commit(
                repo, tree=step.tree, parents=[main, *heads], author=author, message=f"execution {e}\n"
            )
            git_store.set_ref(repo, git_store.MAIN, result)
            lands.append(time.perf_counter() - started)

        history = git_store.open_repository(folder / "history.git")
        head, tree = (
            None,
            git_store.overlay(history, None, {f"src/module_{n}.py": source(n) for n in range(FILES)}),
        )
        for n in range(1000):
            tree = git_store.overlay(history, tree, {f"src/module_{n % FILES}.py": source(n % FILES, n)})
            head = git_store.create_commit(
                history, tree=tree, parents=[head] if head else [], author=author, message=f"commit {n}\n"
            )
        git_store.set_ref(history, git_store.MAIN, head)
        clones = []
        for n in range(3 if ctx.quick else 5):
            started = time.perf_counter()
            subprocess.run(
                ["git", "clone", "-q", "--no-local", str(folder / "history.git"), str(folder / f"clone-{n}")],
                check=True,
                capture_output=True,
            )
            clones.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = {
        "per task (commit + merge check + landing step)": harness.summary_ms(durations),
        "commit": harness.summary_ms(commits),
        "merge with a sibling": harness.summary_ms(merges),
        "landing step": harness.summary_ms(steps),
        f"an execution's merge commit and main moved ({PER_EXECUTION} tasks)": harness.summary_ms(lands),
        "clone of 1,000 commits": harness.summary_ms(clones),
    }
    rows = [[label, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]] for label, s in data.items()]
    p99 = data["per task (commit + merge check + landing step)"]["p99_ms"]
    return {
        "title": f"git per task on a {FILES}-file project; clone of a 1,000-commit project",
        "columns": ["case", "n", "p50 ms", "p99 ms", "max ms"],
        "rows": rows,
        "data": data,
        "checks": [(f"per task p99 ≤ {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS, f"{p99} ms")],
    }
