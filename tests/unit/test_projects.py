"""Projects in git without workers: names, where a task starts, commits, landing, reads."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from executions import projects
from executions.models import Execution, Project, Task
from pools import git_store
from pools.prompts import plan_prompt
from tests.factories import make_client, make_execution


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../etc", "slash"),
        ("a..b", "'..'"),
        ("a/b", "slash"),
        ("a\\b", "slash"),
        ("nul\x00", "NUL"),
        ("x" * 101, "longer than 100"),
        (".hidden", "letters, digits"),
        ("-rf", "letters, digits"),
        ("with space", "letters, digits"),
        ("repo.git", ".git"),
        ("", "non-empty"),
    ],
)
def test_project_names_with_path_tricks_are_refused(name, problem):
    assert problem in projects.name_problem(name)


@pytest.mark.parametrize(
    "name", ["delhi-palace", "shop", "v1.2_site", "x" * 100, "exec_user123_1700000000_abc123"]
)
def test_ordinary_project_names_pass(name):
    assert projects.name_problem(name) is None


def test_repositories_are_kept_apart_per_client(settings, tmp_path):
    settings.OPENCLAW_REPOS_DIR = tmp_path
    assert projects.repository_path(1, "shop") == tmp_path / "1" / "shop.git"
    assert projects.repository_path(2, "shop") == tmp_path / "2" / "shop.git"
    with pytest.raises(projects.ProjectError):
        projects.repository_path(1, "../2/shop")


def test_the_pm_sees_a_follow_ups_existing_files():
    prompt = plan_prompt("Add dark mode", {"codegen": 60}, 8, [("frontend/app.tsx", 120), ("README.md", 9)])
    assert "extends an existing project" in prompt
    assert "frontend/app.tsx  120" in prompt and "README.md  9" in prompt
    assert "existing project" not in plan_prompt("Build a site", {"codegen": 60}, 8, [])


@pytest.fixture
def repos(settings, tmp_path):
    settings.OPENCLAW_REPOS_DIR = tmp_path / "repos"
    return settings.OPENCLAW_REPOS_DIR


def succeed(task: Task, start: projects.Start, files: dict[str, str], summary: str = "done") -> Task:
    commit, objects = projects.commit_output(
        task, start, [{"path": p, "content": c} for p, c in files.items()], summary, "model-x"
    )
    projects.store_objects(objects)
    Task.objects.filter(pk=task.pk).update(
        status="succeeded",
        commit=commit,
        finished_at=timezone.now(),
        result={"summary": summary, "files": [{"path": p, "content": c} for p, c in files.items()]},
        paths=sorted(files),
    )
    task.refresh_from_db()
    return task


@pytest.mark.django_db
def test_a_task_starts_from_its_dependencies_merged_on_the_base_and_commits_as_its_agent(repos):
    client, _ = make_client()
    execution = make_execution(
        client, [{"key": "task_1"}, {"key": "task_2"}, {"key": "task_3", "blocked_by": ["task_1", "task_2"]}]
    )
    Execution.objects.filter(pk=execution.pk).update(project="site")
    Project.objects.create(client=client, name="site")
    execution.refresh_from_db()
    repo = projects.repository_of(execution)
    base = git_store.create_commit(
        repo,
        tree=git_store.overlay(repo, None, {"README.md": "hi\n"}),
        parents=[],
        author=("x", "x@x"),
        message="b",
    )
    projects.push(repo, Project.objects.get(client=client, name="site"), [base])
    Project.objects.filter(client=client, name="site").update(head=base)
    Execution.objects.filter(pk=execution.pk).update(base_commit=base)
    execution.refresh_from_db()
    one, two, three = (
        Task.objects.select_related("execution").get(execution=execution, key=k)
        for k in ("task_1", "task_2", "task_3")
    )

    start = projects.task_start(one, [])
    assert start.parents == [base] and start.files == {"README.md": "hi\n"}
    one = succeed(one, start, {"a.py": "a = 1\n"}, "Wrote a.")
    two = succeed(two, projects.task_start(two, []), {"b.py": "b = 1\n"}, "Wrote b.")
    deps = [{"commit": one.commit}, {"commit": two.commit}]
    start = projects.task_start(three, deps)
    assert start.parents == [one.commit, two.commit]
    assert start.files == {"README.md": "hi\n", "a.py": "a = 1\n", "b.py": "b = 1\n"}

    commit = repo[one.commit]
    assert (commit.author.name, commit.author.email) == (
        "codegen agent (model-x)",
        f"task_1@{execution.pk}.openclaw",
    )
    assert commit.message == "Wrote a.\n" and [str(p.id) for p in commit.parents] == [base]

    three = succeed(three, start, {"a.py": "a = 2\n"}, "Changed a.")
    Execution.objects.filter(pk=execution.pk).update(status="aggregating")
    landing = projects.land(execution)
    assert landing.conflicts == [] and git_store.ref_target(repo) == landing.commit
    assert git_store.files_at(repo, landing.commit) == {
        "README.md": "hi\n",
        "a.py": "a = 2\n",
        "b.py": "b = 1\n",
    }
    assert git_store.ref_target(repo, f"refs/tags/exec-{execution.pk}") == landing.commit
    assert git_store.ref_target(repo, f"refs/heads/executions/{execution.pk}/task_2") == two.commit
    assert [str(p.id) for p in repo[landing.commit].parents][0] == base
    # A redelivered aggregation lands nothing twice.
    assert projects.land(execution).commit == landing.commit
    assert Project.objects.get(client=client, name="site").head == landing.commit

    from bots.render import summary_message

    Execution.objects.filter(pk=execution.pk).update(status="completed", finished_at=timezone.now())
    execution.refresh_from_db()
    slack = summary_message(execution, public_url="https://oc.example").text
    assert "*Project:* 2 files changed, +2 −0 · `git clone https://oc.example/git/site.git`" in slack

    history = projects.history(client.pk, "site")
    assert history[0]["commit"] == landing.commit and history[0]["execution_id"] == execution.pk
    assert {h["task"] for h in history} >= {"task_1", "task_2", "task_3", None}
    patch, stats = projects.execution_diff(execution)
    assert "+++ b/b.py" in patch and stats["files_changed"] == 2


@pytest.mark.django_db
def test_a_corrupt_repository_is_a_project_error_that_says_why(repos):
    client, _ = make_client()
    path = projects.repository_path(client.pk, "broken")
    path.mkdir(parents=True)
    (path / "HEAD").write_text("garbage")
    execution = make_execution(client, [{"key": "task_1"}])
    Execution.objects.filter(pk=execution.pk).update(project="broken")
    execution.refresh_from_db()
    with pytest.raises(projects.ProjectError):
        projects.plan_base(execution)


@pytest.mark.django_db
def test_the_projects_api_lists_only_the_clients_own_projects(repos):
    client, key = make_client()
    other, other_key = make_client("globex")
    Project.objects.create(client=client, name="shop")
    Project.objects.create(client=other, name="secret")
    http = HttpClient(HTTP_X_API_KEY=key)
    listed = http.get("/api/projects").json()
    assert [p["name"] for p in listed] == ["shop"] and listed[0]["clone_url"].endswith("/git/shop.git")
    assert listed[0]["head"] is None
    assert http.get("/api/projects/secret").status_code == 404
    detail = http.get("/api/projects/shop").json()
    assert detail["history"] == [] and detail["files"] == []
    assert HttpClient(HTTP_X_API_KEY=other_key).get("/api/projects/shop").status_code == 404


@pytest.mark.django_db
def test_the_console_shows_a_projects_history_files_and_each_tasks_diff(repos):
    from django.contrib.auth import get_user_model

    client, _ = make_client()
    execution = make_execution(client, [{"key": "task_1"}])
    Execution.objects.filter(pk=execution.pk).update(project="site", status="aggregating")
    Project.objects.create(client=client, name="site")
    execution.refresh_from_db()
    task = Task.objects.select_related("execution").get(execution=execution, key="task_1")
    task = succeed(task, projects.task_start(task, []), {"app.py": "print('hi')\n"}, "Wrote the app.")
    landing = projects.land(execution)
    browser = HttpClient()
    browser.force_login(get_user_model().objects.create_user("ops", password="pw-12345678", is_staff=True))

    listing = browser.get("/console/projects/").content.decode()
    assert f"/console/projects/{client.pk}/site/" in listing
    page = browser.get(f"/console/projects/{client.pk}/site/").content.decode()
    assert landing.commit[:12] in page and "Wrote the app." in page and "app.py" in page
    assert f"/console/executions/{execution.pk}/tasks/task_1/diff" in page
    shown = browser.get(f"/console/projects/{client.pk}/site/?at={task.commit}&path=app.py").content.decode()
    assert "print(&#x27;hi&#x27;)" in shown
    diff = browser.get(f"/console/executions/{execution.pk}/tasks/task_1/diff")
    assert diff.status_code == 200 and "+print('hi')" in diff.content.decode()
    assert "+++ b/app.py" in browser.get(f"/console/executions/{execution.pk}/diff").content.decode()
    assert browser.get(f"/console/projects/{client.pk}/nothing/").status_code == 404
    assert "Project history and files" in browser.get(f"/console/executions/{execution.pk}/").content.decode()


@pytest.mark.django_db
def test_hosts_that_share_only_the_database_read_and_land_each_others_commits(settings, tmp_path):
    """Host A commits a task; host B, with an empty repositories folder, starts a dependent from it,
    lands the execution; a third host serves a clone with every ref."""
    client, _ = make_client()
    execution = make_execution(client, [{"key": "task_1"}, {"key": "task_2", "blocked_by": ["task_1"]}])
    Execution.objects.filter(pk=execution.pk).update(project="shared")
    execution.refresh_from_db()

    settings.OPENCLAW_REPOS_DIR = tmp_path / "host-a"
    one = Task.objects.select_related("execution").get(execution=execution, key="task_1")
    one = succeed(one, projects.task_start(one, []), {"a.py": "a = 1\n"}, "Wrote a.")
    projects.publish_branch(one, one.commit)

    settings.OPENCLAW_REPOS_DIR = tmp_path / "host-b"
    two = Task.objects.select_related("execution").get(execution=execution, key="task_2")
    start = projects.task_start(two, [{"commit": one.commit}])
    assert start.parents == [one.commit] and start.files == {"a.py": "a = 1\n"}
    two = succeed(two, start, {"b.py": "b = 1\n"}, "Wrote b.")
    landing = projects.land(execution)
    assert Project.objects.get(client=client, name="shared").head == landing.commit

    settings.OPENCLAW_REPOS_DIR = tmp_path / "web"
    repo = projects.materialize_refs(client.pk, "shared")
    assert git_store.ref_target(repo) == landing.commit
    assert git_store.ref_target(repo, f"refs/tags/exec-{execution.pk}") == landing.commit
    assert git_store.ref_target(repo, f"refs/heads/executions/{execution.pk}/task_1") == one.commit
    assert git_store.files_at(repo, landing.commit) == {"a.py": "a = 1\n", "b.py": "b = 1\n"}
    copied_again = projects.sync(repo, Project.objects.get(client=client, name="shared"))
    assert copied_again == 0  # it remembers how far it copied

    settings.OPENCLAW_REPOS_DIR = tmp_path / "left-from-another-database"
    stale = projects.repository(client.pk, "shared")
    (Path(stale.path) / projects.SYNC_MARK).write_text("999@1.000000:100000")
    projects.sync(stale, Project.objects.get(client=client, name="shared"))
    assert git_store.files_at(stale, landing.commit) == {"a.py": "a = 1\n", "b.py": "b = 1\n"}


@pytest.mark.django_db
def test_a_landing_that_loses_the_race_for_main_merges_again_onto_the_winner(repos, monkeypatch):
    client, _ = make_client()
    first = make_execution(client, [{"key": "task_1"}])
    second = make_execution(client, [{"key": "task_1"}])
    Execution.objects.filter(pk__in=[first.pk, second.pk]).update(project="race")
    first.refresh_from_db()
    second.refresh_from_db()
    for execution, path in ((first, "one.py"), (second, "two.py")):
        task = Task.objects.select_related("execution").get(execution=execution, key="task_1")
        succeed(task, projects.task_start(task, []), {path: f"{path}\n"})
    real_new_objects, raced = projects.new_objects, []

    def another_lands_meanwhile(repo, project, commits):
        found = real_new_objects(repo, project, commits)
        if not raced:  # the second's merge commit is made: the first lands before it can move main
            raced.append(None)
            raced[0] = projects.land(first)
        return found

    monkeypatch.setattr(projects, "new_objects", another_lands_meanwhile)
    landed_second = projects.land(second)
    repo = projects.repository_of(second)
    assert landed_second.merges == 1
    assert [str(p.id) for p in repo[landed_second.commit].parents][0] == raced[0].commit
    assert set(git_store.files_at(repo, landed_second.commit)) == {"one.py", "two.py"}
    assert Project.objects.get(client=client, name="race").head == landed_second.commit


@pytest.mark.django_db
def test_git_smart_http_speaks_both_protocol_versions_and_refuses_what_it_should(repos):
    import base64

    client, key = make_client()
    _, other_key = make_client("globex")
    Project.objects.create(client=client, name="site")

    def basic(secret: str) -> str:
        return "Basic " + base64.b64encode(f"anyone:{secret}".encode()).decode()

    http = HttpClient()
    refs = "/git/site.git/info/refs?service=git-upload-pack"
    v0 = http.get(refs, HTTP_AUTHORIZATION=basic(key))
    assert v0.status_code == 200 and v0.content.startswith(b"001e# service=git-upload-pack\n0000")
    assert v0["Content-Type"] == "application/x-git-upload-pack-advertisement"
    v2 = http.get(refs, HTTP_AUTHORIZATION=basic(key), HTTP_GIT_PROTOCOL="version=2")
    assert v2.status_code == 200 and v2.content.startswith(b"000eversion 2\n")
    anonymous = http.get(refs)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Basic realm=")
    assert http.get(refs, HTTP_AUTHORIZATION=basic("oc_wrong")).status_code == 401
    assert http.get(refs, HTTP_AUTHORIZATION=basic(other_key)).status_code == 404
    assert (
        http.get("/git/none.git/info/refs?service=git-upload-pack", HTTP_AUTHORIZATION=basic(key)).status_code
        == 404
    )
    push = "/git/site.git/info/refs?service=git-receive-pack"
    assert http.get(push, HTTP_AUTHORIZATION=basic(key)).status_code == 403
    assert (
        http.post(
            "/git/site.git/git-receive-pack",
            b"",
            content_type="application/x-git-receive-pack-request",
            HTTP_AUTHORIZATION=basic(key),
        ).status_code
        == 403
    )
    assert http.get("/git/site.git/info/refs", HTTP_AUTHORIZATION=basic(key)).status_code == 403  # dumb HTTP


def endpoint(method: str, path: str, **shape) -> dict:
    return {"method": method, "path": path, "request": shape, "response": {}}


MENU = {
    "endpoints": [endpoint("GET", "/api/menu_items"), endpoint("POST", "/api/shared", old="string")],
    "tables": [{"name": "menu_items", "columns": {"id": "SERIAL"}}],
}
BOOKINGS = {
    "endpoints": [endpoint("GET", "/api/bookings"), endpoint("POST", "/api/shared", new="integer")],
    "tables": [{"name": "bookings", "columns": {"id": "SERIAL"}}],
}


def two_executions_on(client, name: str, files: tuple[dict, dict]) -> tuple[Execution, Execution]:
    pair = []
    for amendment, written in zip((MENU, BOOKINGS), files, strict=True):
        execution = make_execution(client, [{"key": "task_1"}], status="aggregating")
        contract = {**amendment, "ownership": {"task_1": ["."]}}
        Execution.objects.filter(pk=execution.pk).update(
            project=name, contract=contract, contract_amendment=amendment
        )
        execution.refresh_from_db()
        task = Task.objects.select_related("execution").get(execution=execution, key="task_1")
        succeed(task, projects.task_start(task, []), written)
        pair.append(execution)
    return pair[0], pair[1]


@pytest.mark.django_db
def test_the_projects_contract_moves_with_main_and_only_when_a_landing_wins(repos, monkeypatch):
    client, key = make_client()
    first, second = two_executions_on(client, "race", ({"one.py": "1\n"}, {"two.py": "2\n"}))
    real_new_objects, seen = projects.new_objects, []

    def another_lands_meanwhile(repo, project, commits):
        found = real_new_objects(repo, project, commits)
        if not seen:  # the second's merge commit is made; the first lands before main can move
            seen.append(None)
            projects.land(first)
            # The second's compare-and-set will lose: main and the contract are the first's alone.
            seen.append(Project.objects.get(client=client, name="race").contract)
        return found

    monkeypatch.setattr(projects, "new_objects", another_lands_meanwhile)
    landing = projects.land(second)
    assert landing.merges == 1 and seen[1] == MENU
    project = Project.objects.get(client=client, name="race")
    assert project.head == landing.commit
    assert [(e["method"], e["path"]) for e in project.contract["endpoints"]] == [
        ("GET", "/api/menu_items"),
        ("POST", "/api/shared"),
        ("GET", "/api/bookings"),
    ]
    assert project.contract["endpoints"][1]["request"] == {"new": "integer"}  # redefined: replaced
    assert [t["name"] for t in project.contract["tables"]] == ["menu_items", "bookings"]
    assert "ownership" not in project.contract

    detail = HttpClient(HTTP_X_API_KEY=key).get("/api/projects/race").json()
    assert [e["path"] for e in detail["contract"]["endpoints"]] == [
        "/api/menu_items",
        "/api/shared",
        "/api/bookings",
    ]
    assert [t["name"] for t in detail["contract"]["tables"]] == ["menu_items", "bookings"]


@pytest.mark.django_db
def test_a_landing_that_stops_at_a_conflict_with_main_leaves_the_contract_and_goes_on_with_mains(repos):
    from executions import merge_conflicts

    client, _ = make_client()
    first, second = two_executions_on(
        client, "cafe", ({"main.py": "menu = 1\n"}, {"main.py": "bookings = 1\n"})
    )
    projects.land(first)
    head = Project.objects.get(client=client, name="cafe").head
    landing = projects.land(second, stop_on_main_conflict=True)
    assert landing.commit == "" and landing.main == head and landing.contract == MENU
    project = Project.objects.get(client=client, name="cafe")
    assert (project.head, project.contract) == (head, MENU)  # nothing moved

    assert merge_conflicts.resolve_with_main(second, landing)
    second.refresh_from_db()
    # Back at work on top of the first's main: its contract is the project's there, amended by its own.
    assert second.status == "executing"
    assert [e["path"] for e in second.contract["endpoints"]] == [
        "/api/menu_items",
        "/api/shared",
        "/api/bookings",
    ]
    assert second.contract["endpoints"][1]["request"] == {"new": "integer"}
    assert [t["name"] for t in second.contract["tables"]] == ["menu_items", "bookings"]
    assert second.contract["ownership"] == {"task_1": ["."]}
    assert second.contract_amendment == BOOKINGS


def test_a_version_that_came_from_main_is_mains_even_when_a_resolution_carries_it(tmp_path):
    repo = git_store.open_repository(tmp_path / "repo.git")

    def commit(files: dict[str, str], parents: list[str]) -> str:
        tree = git_store.overlay(repo, git_store.tree_of(repo, parents[0]).id if parents else None, files)
        return git_store.create_commit(repo, tree=tree, parents=parents, author=("t", "t@t"), message="m\n")

    base = commit({"a.py": "a = 0\n", "b.py": "b = 0\n"}, [])
    main = commit({"a.py": "a = 1\n", "b.py": "b = 1\n"}, [base])  # another execution landed
    task_1 = commit({"a.py": "a = 2\n"}, [base])
    # task_1's conflict with main resolved: main merged in, so main's b.py rides along.
    resolution = commit({"a.py": "a = 1\na = 2\n"}, [main, task_1])
    task_2 = commit({"b.py": "b = 2\n"}, [base])
    heads = [
        SimpleNamespace(key="task_1_merge1", commit=resolution),
        SimpleNamespace(key="task_2", commit=task_2),
    ]

    _, conflicts = projects.merge_heads(repo, main, heads, base)

    # task_2 meets main's b.py, not task_1_merge1's: a conflict with main, which a round resolves.
    assert [(ours, theirs, f.path) for ours, theirs, f in conflicts] == [
        (projects.MAIN_LABEL, "task_2", "b.py")
    ]


def meeting_main(name: str) -> tuple[Execution, "projects.Landing"]:
    """Two executions that both change a.py and b.py: the first lands, the second meets its work."""
    client, _ = make_client()
    first, second = two_executions_on(
        client, name, ({"a.py": "a = 1\n", "b.py": "b = 1\n"}, {"a.py": "a = 2\n", "b.py": "b = 2\n"})
    )
    projects.land(first)
    return second, projects.land(second, stop_on_main_conflict=True)


@pytest.mark.django_db
def test_a_resolution_with_main_is_given_every_path_its_own_merge_conflicts_on(repos):
    from executions import merge_conflicts
    from executions.models import Conflict

    second, landing = meeting_main("shop")
    assert sorted(f.path for _, _, f in landing.conflicts) == ["a.py", "b.py"]
    # As a landing meets it when an earlier head carried main's b.py: only a.py against main.
    landing.conflicts = [c for c in landing.conflicts if c[2].path == "a.py"]

    assert merge_conflicts.resolve_with_main(second, landing)

    conflict = Conflict.objects.get(execution=second, kind="merge")
    assert conflict.details["paths"] == ["a.py", "b.py"]
    resolution = Task.objects.get(execution=second, kind="remediation")
    assert [c["path"] for c in resolution.context["conflicts"]] == ["a.py", "b.py"]
    assert all("<<<<<<< main" in f["content"] for f in resolution.context["target_files"])


@pytest.mark.django_db
def test_each_lineage_gets_its_own_rounds_against_main(repos):
    from executions import merge_conflicts
    from executions.conflicts import max_rounds
    from executions.models import Conflict

    client, _ = make_client()
    first, second = two_executions_on(client, "deli", ({"a.py": "a = 1\n"}, {"a.py": "a = 2\n"}))
    projects.land(first)
    landing = projects.land(second, stop_on_main_conflict=True)
    task = Task.objects.get(execution=second, key="task_1")

    def spent(root: int) -> None:
        for _ in range(max_rounds()):
            Conflict.objects.create(
                execution=second,
                kind="merge",
                status="resolved",
                between=["main", "x"],
                details={"landing": True, "root": root},
            )

    spent(task.pk + 1000)  # another lineage's rounds are not this one's
    assert merge_conflicts.resolve_with_main(second, landing)
    Execution.objects.filter(pk=second.pk).update(status="aggregating")
    Conflict.objects.filter(execution=second).delete()
    spent(task.pk)
    assert not merge_conflicts.resolve_with_main(second, landing)  # its own are spent: landed as is


@pytest.mark.django_db
def test_a_path_a_lineage_only_carries_takes_mains_version_in_its_resolution(repos):
    from executions import merge_conflicts
    from executions.models import Conflict

    second, landing = meeting_main("bar")
    # task_1 wrote a.py; b.py came with a dependency's work, whose own lineage brings it to main.
    Task.objects.filter(execution=second, key="task_1").update(paths=["a.py"])

    assert merge_conflicts.resolve_with_main(second, landing)

    conflict = Conflict.objects.get(execution=second, kind="merge")
    assert (conflict.details["paths"], conflict.details["keep_ours"]) == (["a.py"], ["b.py"])
    resolution = Task.objects.select_related("execution").get(execution=second, kind="remediation")
    start = projects.task_start(resolution, [])
    assert start.files["b.py"] == "b = 1\n"  # main's, settled in the resolution's own commit
    assert "<<<<<<< main" in start.files["a.py"] and [c.path for c in start.conflicts] == ["a.py"]
    committed = git_store.files_of_tree(projects.repository_of(second), start.tree)
    assert committed["b.py"] == "b = 1\n"
