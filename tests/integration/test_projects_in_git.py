"""Projects live in git, end to end on real workers, with the real `git` CLI as the client:
clones over smart HTTP, a commit per task, follow-ups, merge conflicts, concurrent executions."""

import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from executions.models import Conflict, Execution, Task
from pools import sandbox
from tests.conftest import configure, wait_for_status, worker_env
from tests.factories import incompressible_text, make_project
from tests.processes import Daphne

DONE = {"completed", "partial", "failed"}
RESTAURANT = "Build a restaurant website with online booking and secure payments"


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "credential.helper=", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
        env={"GIT_TERMINAL_PROMPT": "0", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )


def clone(server, key: str, project: str, dest: Path, *, user: str = "anyone") -> subprocess.CompletedProcess:
    host = server.url.removeprefix("http://")
    return git("clone", f"http://{user}:{key}@{host}/git/{project}.git", str(dest), check=False)


def tree_files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in folder.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(folder).parts
    }


def run(client, message: str, project: str, session: str = "s", mode: str = "auto") -> Execution:
    from executions.services import execution_create

    execution = execution_create(
        client=client, message=message, session_key=session, project=project, mode=mode
    )
    return wait_for_status(execution.pk, DONE, timeout=60)


def test_a_clone_shows_a_commit_per_task_and_a_follow_up_extends_the_history(
    workers, live_server, client_and_key, tmp_path
):
    configure(latency=0.1)
    client, key = client_and_key
    first = run(client, RESTAURANT, "delhi-palace")
    assert first.status == "completed"
    assert first.base_commit == "" and len(first.result_commit) == 40
    tasks = list(Task.objects.filter(execution=first).order_by("key"))
    assert all(len(t.commit) == 40 for t in tasks)

    checkout = tmp_path / "one"
    done = clone(live_server, key, "delhi-palace", checkout)
    assert done.returncode == 0, done.stderr
    log = git("log", "--format=%H|%P|%an|%ae|%s", "main", cwd=checkout).stdout.splitlines()
    by_commit = {line.split("|")[0]: line.split("|") for line in log}
    for task in tasks:
        _, _, author, email, subject = by_commit[task.commit]
        assert author == f"{task.pool} agent (openclaw-offline-1)"
        assert email == f"{task.key}@{first.pk}.openclaw"
        assert subject == task.result["summary"].splitlines()[0]
    head = log[0].split("|")
    assert head[0] == first.result_commit and head[3] == f"openclaw@{first.pk}.openclaw"
    assert git("tag", cwd=checkout).stdout.split() == [f"exec-{first.pk}"]
    assert git("rev-parse", f"exec-{first.pk}", cwd=checkout).stdout.strip() == first.result_commit
    branches = git("branch", "-r", cwd=checkout).stdout
    assert f"origin/executions/{first.pk}/task_2" in branches
    # The audit builds on the code it read: its commit's parent is the backend's.
    audit, backend = (next(t for t in tasks if t.key == k) for k in ("task_4", "task_2"))
    assert git("rev-parse", f"{audit.commit}^", cwd=checkout).stdout.strip() == backend.commit
    files = tree_files(checkout)
    assert {"backend/app/main.py", "database/schema.sql", "frontend/package.json"} <= set(files)

    # The follow-up starts from the project's main and lands on top of it.
    second = run(client, "Add a reviews page to the website", "delhi-palace")
    assert second.status == "completed"
    assert second.base_commit == first.result_commit
    second_checkout = tmp_path / "two"
    assert clone(live_server, key, "delhi-palace", second_checkout).returncode == 0
    first_parents = git("log", "--first-parent", "--format=%H", "main", cwd=second_checkout).stdout.split()
    assert first_parents[:2] == [second.result_commit, first.result_commit]
    assert sorted(git("tag", cwd=second_checkout).stdout.split()) == sorted(
        [f"exec-{first.pk}", f"exec-{second.pk}"]
    )
    new_files = tree_files(second_checkout)
    assert "frontend/pages/reviews.tsx" in new_files
    assert "frontend/pages/restaurants.tsx" in new_files  # what the first execution built is still there
    # Each task of the follow-up started from the first execution's tree.
    for task in Task.objects.filter(execution=second, blocked_by=[]):
        parent = git("rev-parse", f"{task.commit}^", cwd=second_checkout).stdout.strip()
        assert parent == first.result_commit

    # The API tells the same story.
    from django.test import Client as HttpClient

    http = HttpClient(HTTP_X_API_KEY=key)
    detail = http.get("/api/projects/delhi-palace").json()
    assert detail["head"] == second.result_commit and detail["executions"] == 2
    assert detail["clone_url"].endswith("/git/delhi-palace.git")
    commits = {c["commit"]: c for c in detail["history"]}
    assert commits[backend.commit]["task"] == "task_2" and commits[backend.commit]["execution_id"] == first.pk
    assert commits[second.result_commit]["task"] is None
    assert [p["name"] for p in http.get("/api/projects").json()] == ["delhi-palace"]
    diff = http.get(f"/api/execution/{second.pk}/diff")
    assert diff.status_code == 200 and diff["Content-Type"].startswith("text/x-diff")
    assert "+++ b/frontend/pages/reviews.tsx" in diff.content.decode()
    api_tasks = http.get(f"/api/execution/{second.pk}").json()
    assert api_tasks["base_commit"] == first.result_commit
    assert all(t["commit"] and len(t["commit"]) == 40 for t in api_tasks["tasks"])


def test_two_tasks_editing_the_same_lines_conflict_and_a_remediation_resolves_it(
    workers, live_server, client_and_key, tmp_path
):
    plan = {
        "tasks": [
            {
                "id": "task_1",
                "pool": "codegen",
                "description": "FastAPI backend for the menu",
                "priority": 1,
                "timeout_sec": 60,
                "blocked_by": [],
                "context": {},
            },
            {
                "id": "task_2",
                "pool": "codegen",
                "description": "FastAPI backend for bookings",
                "priority": 1,
                "timeout_sec": 60,
                "blocked_by": [],
                "context": {},
            },
        ],
        # No interfaces to agree on: this test is about the two tasks' same-lines edits.
        "contract": {"endpoints": [], "tables": [], "ownership": {}},
    }
    configure(
        latency=0.1,
        options={"plan": plan, "latency_rules": [{"match": "backend for bookings", "latency_sec": 0.8}]},
    )
    client, key = client_and_key
    done = run(client, "Build an API", "diner", session="merge", mode="parallel")
    assert done.status == "completed", (
        list(Conflict.objects.filter(execution=done).values_list("kind", "status", "description")),
        list(Task.objects.filter(execution=done).values_list("key", "kind", "status", "error")),
    )
    tasks = {t.key: t for t in Task.objects.filter(execution=done)}
    [conflict] = Conflict.objects.filter(execution=done, kind="merge")
    assert conflict.between == ["task_1", "task_2"] and conflict.status == "resolved"
    # Both wrote the app and its API test: each merges, the test a record a line.
    assert conflict.details["paths"] == ["backend/app/main.py", "backend/tests/test_api.py"]
    hunks = conflict.details["hunks"]
    assert [h for h in hunks if "list_menu_items" in h["ours"] and "list_bookings" in h["theirs"]]
    fix = tasks["task_2_merge1"]
    assert (fix.kind, fix.parent_id, fix.status) == ("remediation", tasks["task_2"].pk, "succeeded")
    assert {c["path"] for c in fix.context["conflicts"]} == {
        "backend/app/main.py",
        "backend/tests/test_api.py",
    }
    assert "<<<<<<< task_1" in fix.context["target_files"][0]["content"]

    checkout = tmp_path / "diner"
    assert clone(live_server, key, "diner", checkout).returncode == 0
    parents = git("log", "-1", "--format=%P", fix.commit, cwd=checkout).stdout.split()
    assert parents == [tasks["task_1"].commit, tasks["task_2"].commit]
    main = (checkout / "backend/app/main.py").read_text()
    assert "def list_menu_items" in main and "def list_bookings" in main and "<<<<<<<" not in main
    api_test = (checkout / "backend/tests/test_api.py").read_text()
    assert "RECORDS['menu_items'] = " in api_test and "RECORDS['bookings'] = " in api_test
    assert git("merge-base", "--is-ancestor", fix.commit, "main", cwd=checkout, check=False).returncode == 0


def test_two_executions_on_one_project_at_once_both_land(workers, client_and_key, tmp_path, live_server):
    from executions.services import execution_create

    configure(latency=0.3)
    client, key = client_and_key
    schema = execution_create(
        client=client, message="Write a database schema for reviews", session_key="a", project="shop"
    )
    frontend = execution_create(
        client=client, message="Build a Next.js frontend for the menu", session_key="b", project="shop"
    )
    schema = wait_for_status(schema.pk, DONE, timeout=60)
    frontend = wait_for_status(frontend.pk, DONE, timeout=60)
    assert schema.status == frontend.status == "completed"
    checkout = tmp_path / "shop"
    assert clone(live_server, key, "shop", checkout).returncode == 0
    for execution in (schema, frontend):
        assert (
            git(
                "merge-base", "--is-ancestor", execution.result_commit, "main", cwd=checkout, check=False
            ).returncode
            == 0
        )
    files = tree_files(checkout)
    assert {"database/schema.sql", "frontend/package.json", "frontend/pages/menu_items.tsx"} <= set(files)
    assert not Conflict.objects.filter(execution__in=[schema, frontend]).exists()


@pytest.mark.parametrize("name", ["../etc", "a/b", "nul\x00", "x" * 300, ".hidden", "repo.git"])
def test_bad_project_names_are_refused_and_nothing_is_stored(client_and_key, name):
    from django.test import Client as HttpClient

    _, key = client_and_key
    response = HttpClient(HTTP_X_API_KEY=key).post(
        "/api/execute-parallel", {"message": "Build a site", "project": name}, content_type="application/json"
    )
    assert response.status_code == 422 and "project" in response.json()["detail"]
    assert not Execution.objects.exists()


def test_clones_of_foreign_projects_are_404_bad_keys_401_and_pushes_403(
    workers, live_server, client_and_key, tmp_path
):
    from executions.models import ApiKey
    from executions.models import Client as ClientRow

    configure(latency=0.05)
    client, key = client_and_key
    run(client, "Build a contact form", "mine")
    other = ClientRow.objects.create(name="globex")
    _, other_key = ApiKey.issue(other)

    foreign = clone(live_server, other_key, "mine", tmp_path / "foreign")
    assert foreign.returncode != 0 and "not found" in foreign.stderr.lower() or "404" in foreign.stderr
    missing = clone(live_server, key, "nothing-here", tmp_path / "missing")
    assert missing.returncode != 0 and ("404" in missing.stderr or "not found" in missing.stderr.lower())
    wrong = clone(live_server, "oc_wrong", "mine", tmp_path / "wrong")
    assert wrong.returncode != 0 and "Authentication failed" in wrong.stderr

    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as challenge:
        urllib.request.urlopen(f"{live_server.url}/git/mine.git/info/refs?service=git-upload-pack")
    assert challenge.value.code == 401
    assert challenge.value.headers["WWW-Authenticate"].startswith('Basic realm="OpenClaw')

    checkout = tmp_path / "mine"
    assert clone(live_server, key, "mine", checkout).returncode == 0
    (checkout / "extra.txt").write_text("x\n")
    git("add", "extra.txt", cwd=checkout)
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-m", "mine now", cwd=checkout)
    push = git("push", "origin", "main", cwd=checkout, check=False)
    assert push.returncode != 0 and "403" in push.stderr


@pytest.fixture
def web(transactional_db, tmp_path):
    """daphne as in production, with a repositories folder of its own: it serves what the database
    holds."""
    env = worker_env({"OPENCLAW_REPOS_DIR": str(tmp_path / "web-repos")})
    with Daphne(env, settings.VAR_DIR / "test-logs" / "daphne-git.log") as server:
        yield server


def test_a_large_project_clones_whole_through_daphne_in_both_protocol_versions(web, client_and_key, tmp_path):
    client, key = client_and_key
    files = {f"src/module_{n // 50}/file_{n}.py": f"VALUE = {n}\n" for n in range(600)}
    files |= {f"assets/blob-{n}.txt": incompressible_text(n, 2 * 1024 * 1024) for n in range(4)}
    head = make_project(client, "big", files)
    host = web.url.removeprefix("http://")
    for version in ("0", "2"):
        checkout = tmp_path / f"v{version}"
        done = git(
            "-c",
            f"protocol.version={version}",
            "clone",
            f"http://any:{key}@{host}/git/big.git",
            str(checkout),
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert git("rev-parse", "HEAD", cwd=checkout).stdout.strip() == head
        assert tree_files(checkout) == files


def test_an_execution_landing_on_conflicting_work_of_another_resolves_it_and_both_land(
    workers, client_and_key, tmp_path, live_server
):
    from executions.services import execution_create

    configure(latency=0.2, options={"latency_rules": [{"match": "bookings", "latency_sec": 1.0}]})
    client, key = client_and_key
    menu = execution_create(
        client=client, message="Build a FastAPI backend for the menu", session_key="a", project="cafe"
    )
    bookings = execution_create(
        client=client, message="Build a FastAPI backend for bookings", session_key="b", project="cafe"
    )
    menu = wait_for_status(menu.pk, DONE, timeout=60)
    bookings = wait_for_status(bookings.pk, DONE, timeout=60)
    assert menu.status == bookings.status == "completed"
    assert menu.base_commit == bookings.base_commit == ""
    # Both wrote the backend and the schema: each file met on main is a conflict, resolved.
    conflicts = list(Conflict.objects.filter(execution=bookings, kind="merge").order_by("pk"))
    assert conflicts and all(c.between[0] == "main" and c.status == "resolved" for c in conflicts)
    assert all(c.details["ours"]["commit"] == menu.result_commit for c in conflicts)
    conflict = next(c for c in conflicts if "backend/app/main.py" in c.details["paths"])
    fix = Task.objects.get(execution=bookings, key=conflict.details["tasks"][-1])
    assert fix.status == "succeeded"

    checkout = tmp_path / "cafe"
    assert clone(live_server, key, "cafe", checkout).returncode == 0
    assert git("rev-parse", "main", cwd=checkout).stdout.strip() == bookings.result_commit
    parents = git("log", "-1", "--format=%P", fix.commit, cwd=checkout).stdout.split()
    assert parents[0] == menu.result_commit
    main = (checkout / "backend/app/main.py").read_text()
    assert "def list_menu_items" in main and "def list_bookings" in main and "<<<<<<<" not in main
    schema = (checkout / "database/schema.sql").read_text()
    assert (
        "CREATE TABLE menu_items" in schema and "CREATE TABLE bookings" in schema and "<<<<<<<" not in schema
    )
    first_parents = git("log", "--first-parent", "--format=%H", "main", cwd=checkout).stdout.split()
    assert first_parents[:2] == [bookings.result_commit, menu.result_commit]


def test_a_follow_ups_agents_find_the_projects_files_in_their_workspace(workers, client_and_key):
    from executions.models import AttemptTurn

    configure(latency=0.05, max_turns=8)
    client, _ = client_and_key
    first = run(client, "Write a database schema for reviews", "reviews")
    assert first.status == "completed"
    second = run(client, RESTAURANT, "reviews")
    assert second.status == "completed" and second.base_commit == first.result_commit
    # The audit depends on the backend only; the schema in its listing is the project's.
    audit = Task.objects.get(execution=second, key="task_4")
    listing = next(
        result["content"]
        for turn in AttemptTurn.objects.filter(attempt__task=audit)
        for result in turn.tool_results
        if result.get("name") == "list_files"
    )
    assert "database/schema.sql" in listing and "backend/app/main.py" in listing
    assert "frontend/package.json" not in listing  # not its dependency's, not the project's yet


def test_a_corrupt_or_locked_repository_fails_its_execution_with_the_reason_and_no_other(
    workers, client_and_key
):
    from executions import projects
    from executions.services import execution_create
    from pools import git_store

    configure(latency=0.05)
    client, _ = client_and_key
    corrupt = git_store.open_repository(projects.repository_path(client.pk, "corrupt"))
    Path(corrupt.path, "config").write_text("[core\n\tbare = \x00 not a config\n")
    locked = git_store.open_repository(projects.repository_path(client.pk, "locked"))
    Path(locked.path, "refs", "heads", "main.lock").write_text("held by someone else\n")
    started = {
        name: execution_create(client=client, message="Build a contact form", session_key=name, project=name)
        for name in ("corrupt", "locked", "healthy")
    }
    done = {name: wait_for_status(e.pk, DONE, timeout=60) for name, e in started.items()}
    assert done["healthy"].status == "completed" and done["healthy"].result_commit
    assert done["corrupt"].status == "failed" and "ProjectError" in done["corrupt"].error
    assert done["locked"].status == "failed" and "repository" in done["locked"].error
    assert "lock" in done["locked"].error.lower()
    assert done["locked"].refund_usd == done["locked"].fee_usd > 0


def test_a_worker_group_with_its_own_empty_var_completes_a_follow_up(
    transactional_db, redis_server, client_and_key, live_server, tmp_path
):
    """Hosts that share no disk: each worker group has a var/ of its own; only PostgreSQL (here the
    test database) and Redis are shared. The web host (this process) has never seen either."""
    from tests.conftest import Workers

    configure(latency=0.05)
    client, key = client_and_key
    # Workspaces stay where the sandbox's user can reach them (pytest's tmp_path is private to root).
    reachable = str(settings.OPENCLAW_WORKSPACES_DIR)
    first_host = Workers(
        env={"OPENCLAW_VAR_DIR": str(tmp_path / "host-a"), "OPENCLAW_WORKSPACES_DIR": reachable}
    ).start()
    try:
        first = run(client, RESTAURANT, "far-away")
    finally:
        first_host.stop()
    second_host = Workers(
        env={"OPENCLAW_VAR_DIR": str(tmp_path / "host-b"), "OPENCLAW_WORKSPACES_DIR": reachable}
    ).start()
    try:
        second = run(client, "Add a reviews page to the website", "far-away")
    finally:
        second_host.stop()
    assert first.status == second.status == "completed"
    assert second.base_commit == first.result_commit
    assert list(
        (tmp_path / "host-b" / "repos").glob("*/far-away.git")
    )  # its own copy, made from the database

    checkout = tmp_path / "clone"
    done = clone(live_server, key, "far-away", checkout)
    assert done.returncode == 0, done.stderr
    assert git("rev-parse", "main", cwd=checkout).stdout.strip() == second.result_commit
    assert sorted(git("tag", cwd=checkout).stdout.split()) == sorted(
        [f"exec-{first.pk}", f"exec-{second.pk}"]
    )
    files = tree_files(checkout)
    assert {"frontend/pages/reviews.tsx", "frontend/pages/restaurants.tsx", "database/schema.sql"} <= set(
        files
    )
    assert git("fsck", "--strict", cwd=checkout, check=False).returncode == 0


def test_a_follow_up_keeps_the_projects_contract_and_adds_its_own(
    workers, client_and_key, tmp_path, live_server
):
    from django.test import Client as HttpClient

    from executions.models import Project

    configure(latency=0.05)
    client, key = client_and_key
    menu = run(client, "Build a FastAPI backend for the menu", "bistro", session="a")
    assert menu.status == "completed"
    stored = Project.objects.get(client=client, name="bistro").contract
    assert {(e["method"], e["path"]) for e in stored["endpoints"]} == {
        ("GET", "/api/menu_items"),
        ("POST", "/api/menu_items"),
    }

    bookings = run(client, "Build a FastAPI backend for bookings", "bistro", session="b")
    assert bookings.status == "completed" and bookings.base_commit == menu.result_commit
    # Every agent of the follow-up built to the endpoints and tables that already existed, and its own.
    paths = [(e["method"], e["path"]) for e in bookings.contract["endpoints"]]
    assert paths == [
        ("GET", "/api/menu_items"),
        ("POST", "/api/menu_items"),
        ("GET", "/api/bookings"),
        ("POST", "/api/bookings"),
    ]
    assert {t["name"] for t in bookings.contract["tables"]} == {"users", "menu_items", "bookings"}
    assert [e["path"] for e in bookings.contract_amendment["endpoints"]] == ["/api/bookings"] * 2
    project = HttpClient(HTTP_X_API_KEY=key).get("/api/projects/bistro").json()
    assert [(e["method"], e["path"]) for e in project["contract"]["endpoints"]] == paths
    assert {t["name"] for t in project["contract"]["tables"]} == {"users", "menu_items", "bookings"}

    checkout = tmp_path / "bistro"
    assert clone(live_server, key, "bistro", checkout).returncode == 0
    main = (checkout / "backend/app/main.py").read_text()
    assert "def list_menu_items" in main and "def list_bookings" in main


def test_a_follow_up_is_checked_and_tested_as_the_project_it_lands_in(workers, client_and_key):
    configure(latency=0.05)
    client, _ = client_and_key
    menu = run(client, "Build a FastAPI backend for the menu", "diner", session="a")
    assert menu.status == "completed" and "$ pytest backend" in menu.integration["output_tail"]

    # A follow-up that writes no backend code: the project's backend is still the one its contract
    # is checked against, and the project's tests run beside its own.
    page = run(client, "Add a dark mode toggle to the frontend", "diner", session="b")
    assert page.status == "completed", page.final_response
    written = {p for t in page.tasks.filter(status="succeeded") for p in Task.paths_of(t.result)}
    assert not any(p.startswith("backend/") for p in written)
    assert page.contract_report["counts"]["routes"] >= 2
    assert page.contract_report["passed"] == page.contract_report["checks"] > 0
    gate = page.integration
    assert gate["ok"] and "$ pytest backend" in gate["output_tail"]
    assert gate["passed"] >= menu.integration["passed"], gate  # the project's tests, all passing


def test_a_frontend_follow_up_that_names_no_entity_adds_its_component_and_no_endpoint(
    workers, client_and_key, tmp_path, live_server
):
    configure(latency=0.05)
    client, key = client_and_key
    first = run(client, RESTAURANT, "bistro", session="a")
    assert first.status == "completed", first.final_response

    toggle = run(client, "Add a dark mode toggle to the frontend", "bistro", session="b")

    assert toggle.status == "completed", toggle.final_response
    # No placeholder endpoint nobody serves: the project's contract, every check passing.
    paths = {e["path"] for e in toggle.contract["endpoints"]}
    assert paths == {e["path"] for e in first.contract["endpoints"]} and "/api/items" not in paths
    assert toggle.contract_amendment.get("endpoints", []) == []
    assert toggle.contract_report["passed"] == toggle.contract_report["checks"] > 0
    assert toggle.contract_report["notes"] == []
    written = {p for t in toggle.tasks.filter(status="succeeded") for p in Task.paths_of(t.result)}
    assert "frontend/components/DarkModeToggle.tsx" in written
    # In one reply too, shown the project's files, the agent mounts its component on every page.
    assert "frontend/pages/_app.tsx" in written
    assert ": 0 files changed" not in toggle.final_response

    # In its tool loop, the next feature's agent looks at the project's components and mounts its
    # own beside them.
    configure(latency=0.05, max_turns=16)
    picker = run(client, "Add a language picker to the frontend", "bistro", session="c")
    assert picker.status == "completed", picker.final_response
    checkout = tmp_path / "bistro"
    assert clone(live_server, key, "bistro", checkout).returncode == 0
    app = (checkout / "frontend/pages/_app.tsx").read_text()
    for component in ("DarkModeToggle", "LanguagePicker"):
        assert f'import {component} from "../components/{component}";' in app
        assert f"<{component} />" in app
    assert (
        'style.colorScheme = on ? "dark" : "light"'
        in (checkout / "frontend/components/DarkModeToggle.tsx").read_text()
    )


def test_a_follow_up_adding_a_kind_of_record_grows_its_table_endpoints_and_page(
    workers, client_and_key, tmp_path, live_server
):
    configure(latency=0.05)
    client, key = client_and_key
    first = run(client, RESTAURANT, "trattoria", session="a")
    reviews = run(client, "Add a reviews page where diners rate their meal", "trattoria", session="b")

    assert (first.status, reviews.status) == ("completed", "completed"), reviews.final_response
    assert sorted(reviews.contract["ownership"].values()) == [["backend"], ["database"], ["frontend"]]
    assert (
        reviews.contract_report["passed"]
        == reviews.contract_report["checks"]
        > first.contract_report["checks"]
    )
    checkout = tmp_path / "trattoria"
    assert clone(live_server, key, "trattoria", checkout).returncode == 0
    assert "CREATE TABLE reviews" in (checkout / "database/schema.sql").read_text()
    backend = (checkout / "backend/app/main.py").read_text()
    assert '@router.get("/reviews")' in backend and "def list_bookings" in backend  # grown, nothing lost
    assert "/api/reviews" in (checkout / "frontend/pages/reviews.tsx").read_text()
    assert (checkout / "frontend/pages/bookings.tsx").exists()
    assert not (checkout / "frontend/components").exists()  # the page is the feature: no stray component


def test_two_follow_ups_at_once_on_one_project_both_land_whole(
    workers, client_and_key, tmp_path, live_server
):
    from executions.services import execution_create

    configure(latency=0.2)
    client, key = client_and_key
    assert run(client, RESTAURANT, "osteria", session="a").status == "completed"

    # Both plan on the same main and grow the same files (the schema, the backend, the pages):
    # the later one to land meets the earlier one's work on main and resolves it.
    started = [
        execution_create(client=client, message=message, session_key=session, project="osteria")
        for message, session in (
            ("Add a reviews page where diners rate their meal", "b"),
            ("Add invoices for each order, with a page listing them", "c"),
        )
    ]
    done = [wait_for_status(e.pk, DONE, timeout=90) for e in started]

    assert [e.status for e in done] == ["completed", "completed"], [e.final_response for e in done]
    checkout = tmp_path / "osteria"
    assert clone(live_server, key, "osteria", checkout).returncode == 0
    schema = (checkout / "database/schema.sql").read_text()
    backend = (checkout / "backend/app/main.py").read_text()
    for table in ("bookings", "reviews", "invoices", "orders"):
        assert f"CREATE TABLE {table}" in schema, table
        assert f'@router.get("/{table}")' in backend, table
        assert (checkout / f"frontend/pages/{table}.tsx").exists(), table


def test_follow_ups_that_add_modules_keep_each_others_tests(workers, client_and_key):
    configure(latency=0.05, max_turns=16)  # the agents' loop writes and runs their tests
    client, _ = client_and_key
    first = run(client, "Add a slug helper", "tools", session="a")
    second = run(client, "Add a retry helper", "tools", session="b")

    assert (first.status, second.status) == ("completed", "completed"), second.final_response
    tests = {
        path
        for execution in (first, second)
        for task in execution.tasks.filter(status="succeeded")
        for path in Task.paths_of(task.result)
        if "/tests/" in path
    }
    assert tests == {
        "src/tests/test_add_a_slug_helper_files.py",
        "src/tests/test_add_a_retry_helper_files.py",
    }
    # The second's gate ran the first's test too: the project's tests, all of them.
    assert second.integration["ok"] and second.integration["passed"] == 2 * first.integration["passed"]
    # So did the second's agent in its loop: its folder's suite, not only the test it wrote.
    [agent] = second.tasks.filter(status="succeeded")
    assert agent.result["commands"][-1]["command"] == "cd src && python3 -m pytest -q"
    assert agent.result["tests"] == {"passed": 4, "failed": 0}


def test_a_small_app_is_one_agents_schema_backend_and_page_that_run_together(
    workers, client_and_key, tmp_path, live_server
):
    configure(latency=0.05, max_turns=16)
    client, key = client_and_key
    done = run(client, "Build a contact form", "contact")

    assert done.status == "completed", done.final_response
    [task] = done.tasks.all()  # the seed's small project: one agent
    assert set(Task.paths_of(task.result)) >= {
        "database/schema.sql",
        "backend/app/main.py",
        "frontend/pages/messages.tsx",
    }
    assert [e["path"] for e in done.contract["endpoints"]] == ["/api/messages", "/api/messages"]
    assert done.contract_report["passed"] == done.contract_report["checks"] > 0
    gate = done.integration
    assert gate["ok"] and "$ pytest backend" in gate["output_tail"] and gate["passed"] > 0, gate
    assert "backend/tests/test_backend_files.py" in Task.paths_of(task.result)  # its own test, run

    checkout = tmp_path / "contact"
    assert clone(live_server, key, "contact", checkout).returncode == 0
    assert "CREATE TABLE messages" in (checkout / "database/schema.sql").read_text()
    assert "def create_messages" in (checkout / "backend/app/main.py").read_text()
    assert "/api/messages" in (checkout / "frontend/pages/messages.tsx").read_text()


def test_a_landing_page_is_one_agents_site_and_a_feature_of_it_is_mounted_on_it(
    workers, client_and_key, tmp_path, live_server
):
    configure(latency=0.05, max_turns=16)
    client, key = client_and_key
    landing = run(client, "Build a landing page for a coffee shop", "cafe")

    assert landing.status == "completed", landing.final_response
    [task] = landing.tasks.all()
    assert task.description == "Build Next.js frontend: Build a landing page for a coffee shop"
    assert landing.contract["endpoints"] == [] and landing.contract["tables"] == []  # calls no API
    assert landing.integration["ok"], landing.integration  # its agent's own test, in the gate

    toggle = run(client, "Add a dark mode toggle to the website", "cafe", session="b")
    assert toggle.status == "completed", toggle.final_response
    checkout = tmp_path / "cafe"
    assert clone(live_server, key, "cafe", checkout).returncode == 0
    home = (checkout / "frontend/pages/index.tsx").read_text()
    assert '"title": "Coffee shop"' in home and '"id": "menu"' in home  # the site, kept whole
    app = (checkout / "frontend/pages/_app.tsx").read_text()
    assert "<DarkModeToggle />" in app and not (checkout / "frontend/pages/items.tsx").exists()


UPGRADE = """\
import json, sys
from fastapi.testclient import TestClient
from app.main import app

booking = {"name": "Ada", "party_size": 2, "starts_at": "2026-12-24T19:00", **json.loads(sys.argv[1])}
client = TestClient(app)
assert client.post("/api/bookings", json=booking).status_code == 200
print(json.dumps(client.get("/api/bookings").json()))
"""


@pytest.mark.skipif(not sandbox.availability()[0] and not os.environ.get("CI"), reason="no sandbox here")
def test_a_follow_up_adding_a_field_migrates_a_database_the_project_made_before(
    workers, client_and_key, live_server
):
    configure(latency=0.05)
    client, key = client_and_key
    first = run(client, RESTAURANT, "osteria", session="a")
    phone = run(client, "Add a phone number field to bookings", "osteria", session="b")

    assert (first.status, phone.status) == ("completed", "completed"), phone.final_response
    assert sorted(phone.contract["ownership"].values()) == [["backend"], ["database"], ["frontend"]]
    [bookings] = [t for t in phone.contract["tables"] if t["name"] == "bookings"]
    assert bookings["columns"]["phone"] == "TEXT" and "restaurants" in {
        t["name"] for t in phone.contract["tables"]
    }
    schema_task = phone.tasks.get(pool="database")
    [report] = schema_task.result["verification"]["migrations"].values()
    assert report["accepted"] and report["migrations"] == ["database/migrations/0001_bookings_phone.sql"]
    assert (
        phone.contract_report["passed"] == phone.contract_report["checks"] > first.contract_report["checks"]
    )
    assert phone.integration["ok"] and phone.integration["passed"] > 0, phone.integration
    assert "1 migration applied to the schema before it" in phone.final_response

    # A database the first version made keeps its rows and gains the column on the next start.
    workspace = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    workspace.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert clone(live_server, key, "osteria", workspace).returncode == 0
        (workspace / "backend/upgrade.py").write_text(UPGRADE)  # untracked: kept by the checkouts
        command = "cd backend && DATABASE_PATH=../app.db python3 upgrade.py {}"
        git("checkout", "-q", f"exec-{first.pk}", cwd=workspace)
        before = sandbox.run(workspace, command.format("'{}'"), timeout_sec=60)
        assert before.exit_code == 0, before.output
        git("checkout", "-q", "main", cwd=workspace)
        after = sandbox.run(
            workspace, command.format(shlex.quote('{"phone": "+44 20 7946 0000"}')), timeout_sec=60
        )
        assert after.exit_code == 0, after.output
        rows = json.loads(after.output.strip().splitlines()[-1])
        assert [(row["name"], row["phone"]) for row in rows] == [("Ada", None), ("Ada", "+44 20 7946 0000")]
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
