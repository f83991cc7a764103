"""Merging, file collisions, dependency overlays, quality and the artifacts zip (database, no workers)."""

import io
import re
import zipfile
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from executions import merge, result_aggregator
from executions.agent_attempt import dependency_results
from executions.conflicts import record_collisions
from executions.models import ApiKey, Client, Conflict, Event, Execution, Task

T0 = timezone.now()


@pytest.fixture
def execution(db):
    client = Client.objects.create(name="acme")
    return Execution.objects.create(
        id="exec_test_1",
        client=client,
        session_key="s",
        message="Build it",
        status="executing",
        started_at=T0,
    )


def make_task(
    execution,
    key,
    *,
    files=(),
    findings=(),
    kind="plan",
    pool="codegen",
    status="succeeded",
    parent=None,
    at=0,
    blocked_by=(),
    soft_deps=(),
    weight=1.0,
):
    return Task.objects.create(
        execution=execution,
        key=key,
        pool=pool,
        description=key,
        kind=kind,
        status=status,
        parent=parent,
        blocked_by=list(blocked_by),
        soft_deps=list(soft_deps),
        weight=weight,
        finished_at=T0 + timedelta(seconds=at) if status == "succeeded" else None,
        result={
            "summary": key,
            "files": [{"path": p, "content": c} for p, c in files],
            "findings": list(findings),
        },
    )


def test_a_remediation_replaces_its_originals_files_without_a_collision(execution):
    code = make_task(execution, "task_2", files=[("app.py", "v1"), ("req.txt", "fastapi")], at=1)
    make_task(execution, "task_2_fix1", kind="remediation", parent=code, files=[("app.py", "v2")], at=2)

    tree, collisions = merge.merged_files(list(execution.tasks.all()))

    assert {p: e["content"] for p, e in tree.items()} == {"app.py": "v2", "req.txt": "fastapi"}
    assert collisions == []


def test_two_lineages_writing_one_path_collide_and_the_rule_decides(execution):
    make_task(execution, "task_1", files=[("README.md", "frontend")], at=1)
    later = make_task(execution, "task_2", files=[("README.md", "backend")], at=2)
    schema = make_task(execution, "task_3", pool="database", files=[("schema.sql", "a")], at=3)
    make_task(
        execution,
        "task_3_rev1",
        kind="revision",
        pool="database",
        parent=schema,
        files=[("schema.sql", "b")],
        at=4,
    )
    # A revision of one lineage beats a later original of another.
    intruder = make_task(execution, "task_4", files=[("schema.sql", "c")], at=5)

    record_collisions(later)
    record_collisions(intruder)

    conflicts = list(Conflict.objects.filter(execution=execution).order_by("id"))
    assert [(c.kind, c.status, c.between) for c in conflicts] == [
        ("file_collision", "resolved", ["task_1", "task_2"]),
        ("file_collision", "resolved", ["task_4", "task_3_rev1"]),
    ]
    assert conflicts[1].resolution.startswith(
        "Kept task_3_rev1's version of schema.sql (remediation beats original"
    )
    tree, _ = merge.merged_files(list(execution.tasks.all()))
    assert tree["README.md"]["content"] == "backend" and tree["schema.sql"]["content"] == "b"
    assert (
        list(Event.objects.filter(execution=execution).values_list("type", flat=True))
        == ["conflict.detected", "conflict.resolved"] * 2
    )


def test_each_new_version_of_a_path_is_recorded_against_the_one_it_replaces(execution):
    for n in range(1, 5):  # four lineages rewrite app.py one after the other
        record_collisions(
            make_task(execution, f"task_{n}", files=[("app.py", f"v{n}"), (f"m{n}.py", "x")], at=n)
        )
    same = make_task(execution, "task_5", files=[("app.py", "v4")], at=5)
    record_collisions(same)  # the same content as the current version: nothing collides

    assert [c.between for c in Conflict.objects.filter(execution=execution).order_by("id")] == [
        ["task_1", "task_2"],
        ["task_2", "task_3"],
        ["task_3", "task_4"],
    ]


def test_collisions_read_only_the_results_that_write_the_same_paths(execution, django_assert_num_queries):
    for n in range(20):
        make_task(execution, f"task_{n}", files=[(f"src/module_{n}.py", "x")], at=n)
    alone = make_task(execution, "task_alone", files=[("src/alone.py", "x")], at=30)
    assert alone.paths == ["src/alone.py"]
    with django_assert_num_queries(1):  # the other tasks' paths; no result is read
        record_collisions(alone)
    assert not Conflict.objects.exists()


def test_collisions_read_the_result_of_each_paths_current_version_only(execution):
    from django.db.models.signals import post_init

    for n in range(1, 11):  # ten lineages rewrite app.py one after the other
        record_collisions(make_task(execution, f"task_{n}", files=[("app.py", f"v{n}")], at=n))
    latest = make_task(execution, "task_11", files=[("app.py", "v11")], at=11)
    results_read = []
    post_init.connect(
        lambda instance, **_: "result" in instance.get_deferred_fields() or results_read.append(instance.key),
        sender=Task,
        weak=False,
        dispatch_uid="count-results-read",
    )
    try:
        record_collisions(latest)
    finally:
        post_init.disconnect(sender=Task, dispatch_uid="count-results-read")

    assert results_read == ["task_10"]
    assert Conflict.objects.order_by("-id").first().between == ["task_10", "task_11"]


def test_two_fixes_of_one_original_writing_a_new_file_are_one_lineage(execution):
    code = make_task(execution, "task_2", files=[("app.py", "v1")], at=1)
    make_task(execution, "task_2_fix1", kind="remediation", parent=code, files=[("auth.py", "a")], at=2)
    second = make_task(
        execution, "task_2_fix2", kind="remediation", parent=code, files=[("auth.py", "b")], at=3
    )

    record_collisions(second)  # the original writes no auth.py, yet it makes the two fixes one lineage

    assert not Conflict.objects.exists()


def test_dependents_read_a_lineage_as_its_latest_version(execution):
    code = make_task(execution, "task_2", files=[("app.py", "v1"), ("req.txt", "x")], at=1)
    make_task(execution, "task_2_fix1", kind="remediation", parent=code, files=[("app.py", "v2")], at=2)
    reaudit = make_task(
        execution,
        "task_2_reaudit1",
        kind="reaudit",
        pool="security",
        status="pending",
        blocked_by=["task_2_fix1"],
    )

    [dep] = dependency_results(reaudit)

    assert (dep["key"], dep["source"], dep["hard"]) == ("task_2", "task_2_fix1", True)
    assert {f["path"]: f["content"] for f in dep["files"]} == {"app.py": "v2", "req.txt": "x"}


def test_dependents_read_their_dependencies_lineages_only(execution):
    from django.db.models.signals import post_init

    for n in range(30):
        make_task(execution, f"other_{n}", files=[(f"m{n}.py", "x")], at=n)
    code = make_task(execution, "task_2", files=[("app.py", "v1")], at=40)
    make_task(execution, "task_2_fix1", kind="remediation", parent=code, files=[("app.py", "v2")], at=41)
    dependent = make_task(execution, "task_9", status="queued", blocked_by=["task_2"])
    loaded = []
    post_init.connect(
        lambda instance, **_: loaded.append(instance.key),
        sender=Task,
        weak=False,
        dispatch_uid="count-loaded-tasks",
    )
    try:
        [dep] = dependency_results(dependent)
    finally:
        post_init.disconnect(sender=Task, dispatch_uid="count-loaded-tasks")

    assert (dep["source"], dep["files"]) == ("task_2_fix1", [{"path": "app.py", "content": "v2"}])
    assert sorted(loaded) == ["task_2", "task_2_fix1"]


def test_a_soft_dependency_under_revision_is_not_ready(execution):
    schema = make_task(execution, "task_3", pool="database", files=[("schema.sql", "rejected")], at=1)
    revision = make_task(
        execution, "task_3_rev1", kind="revision", pool="database", parent=schema, status="running"
    )
    backend = make_task(execution, "task_2", status="queued", soft_deps=["task_3"])
    integration = make_task(execution, "task_5", status="pending", blocked_by=["task_3", "task_3_rev1"])

    assert dependency_results(backend) == []
    Task.objects.filter(pk=revision.pk).update(
        status="succeeded",
        finished_at=T0 + timedelta(seconds=2),
        result={"summary": "r", "files": [{"path": "schema.sql", "content": "ok"}]},
    )
    [soft] = dependency_results(backend)
    [hard] = dependency_results(integration)
    assert soft["files"] == hard["files"] == [{"path": "schema.sql", "content": "ok"}]
    assert (soft["hard"], hard["hard"]) == (False, True)


HIGH = {"severity": "high", "title": "SQL injection", "file": "app.py", "line": 3}


@pytest.mark.parametrize(
    "setup,expected",
    [
        ({}, 1.0),
        # One place flagged by two tools counts once: 1 × (1 − 0.1).
        ({"findings": [HIGH, {**HIGH, "title": "B608"}]}, 0.9),
        ({"findings": [{**HIGH, "resolved": True}]}, 1.0),
        # Medium findings weigh 0.02 each; info and low nothing.
        ({"findings": [{**HIGH, "severity": "medium"}, {**HIGH, "severity": "low", "line": 9}]}, 0.98),
        # The penalty for findings stops at half.
        ({"findings": [{**HIGH, "line": n} for n in range(9)]}, 0.5),
        # Each unresolved conflict multiplies by 0.85.
        ({"unresolved": 1}, 0.85),
        ({"unresolved": 2}, 0.72),
        # A dead planned task of weight 1 of 4 loses its share, and each dead task multiplies by 0.95.
        ({"dead": True}, 0.71),
        # The share of the contract checks that pass on the merged tree: 18 of 20.
        ({"contract": {"checks": 20, "passed": 18}}, 0.9),
        # The share of the gate's tests that pass: 3 of 4; and a gate that failed with no test failing.
        ({"gate": {"ran": True, "ok": False, "passed": 3, "failed": 1}}, 0.75),
        ({"gate": {"ran": True, "ok": False, "passed": 0, "failed": 0}}, 0.0),
        # A gate that could not run changes nothing (the integration object says it did not run).
        ({"gate": {"ran": False, "ok": True, "reason": "no sandbox"}}, 1.0),
        # An open high finding and an unresolved conflict: 0.9 × 0.85, half up.
        ({"findings": [HIGH], "unresolved": 1}, 0.77),
    ],
)
def test_quality_score_formula(execution, setup, expected):
    make_task(execution, "task_1", findings=setup.get("findings", []), weight=3.0)
    make_task(execution, "task_2", status="dead" if setup.get("dead") else "succeeded", weight=1.0)
    for _ in range(setup.get("unresolved", 0)):
        Conflict.objects.create(
            execution=execution,
            kind="security_finding",
            between=["task_1"],
            description="d",
            status="unresolved",
        )

    score = result_aggregator.quality_score(
        list(execution.tasks.all()), list(execution.conflicts.all()), setup.get("contract"), setup.get("gate")
    )

    assert score == expected


def test_synthesis_facts_report_timeline_remediation_security_and_open_issues(execution):
    Execution.objects.filter(pk=execution.pk).update(
        serial_estimate_sec=300, finished_at=T0 + timedelta(seconds=150), mode="parallel"
    )
    execution.refresh_from_db()
    code = make_task(
        execution, "task_2", files=[("app.py", "v1")], findings=[{**HIGH, "file": "lib.py"}], at=1
    )
    fix = make_task(execution, "task_2_fix1", kind="remediation", parent=code, files=[("app.py", "v2")], at=3)
    Task.objects.filter(pk=fix.pk).update(started_at=T0 + timedelta(seconds=1))
    Conflict.objects.create(
        execution=execution,
        kind="security_finding",
        between=["task_4", "task_2"],
        description="Security vs CodeGen on SQL injection",
        status="resolved",
        resolution="fixed by task_2_fix1",
    )
    tasks, conflicts = list(execution.tasks.all()), list(execution.conflicts.all())

    facts = result_aggregator.synthesis_facts(execution, tasks, conflicts, "completed", 0.9)

    assert facts["timeline"] == "150s wall clock in parallel mode vs 300s serial estimate (50% faster)"
    assert facts["remediation"].startswith("1 follow-up task for conflicts (task_2_fix1): 2s of agent time")
    assert facts["security"][0] == "Security vs CodeGen on SQL injection → fixed by task_2_fix1"
    assert facts["security"][1] == (
        "every output verified by real tools: 0 files parsed, 0 Python files scanned with bandit, "
        "0 schemas applied to a scratch database"
    )
    assert facts["unresolved"] == ["open finding: SQL injection (lib.py)"]
    assert facts["delivered"] == ["task_2 (codegen): task_2"] and facts["quality_score"] == 0.9
    # No money: the bill is appended to the answer once its own call is billed.
    assert not {"cost", "refund"} & set(facts)


def test_a_serial_run_is_not_called_faster_than_its_own_estimate(execution):
    Execution.objects.filter(pk=execution.pk).update(
        serial_estimate_sec=128, finished_at=T0 + timedelta(seconds=26), mode="serial"
    )
    execution.refresh_from_db()
    tasks = [make_task(execution, "task_1")]

    facts = result_aggregator.synthesis_facts(execution, tasks, [], "completed", 1.0)

    assert facts["timeline"] == "26s wall clock in serial mode (estimated 128s)"


def test_an_execution_that_delivered_nothing_is_not_called_faster(execution):
    Execution.objects.filter(pk=execution.pk).update(
        serial_estimate_sec=12, finished_at=T0 + timedelta(seconds=0.02), mode="parallel"
    )
    execution.refresh_from_db()
    tasks = [make_task(execution, "task_1", status="cancelled")]

    facts = result_aggregator.synthesis_facts(execution, tasks, [], "budget_exceeded", 0.0)

    assert facts["timeline"] == "0s wall clock in parallel mode vs 12s serial estimate"


def test_artifacts_zip_holds_the_merged_tree_for_its_owner_only(execution):
    code = make_task(execution, "task_2", files=[("backend/app.py", "v1"), ("README.md", "hi")], at=1)
    make_task(
        execution, "task_2_fix1", kind="remediation", parent=code, files=[("backend/app.py", "v2")], at=2
    )
    _, key = ApiKey.issue(execution.client)
    _, stranger_key = ApiKey.issue(Client.objects.create(name="other"))

    response = HttpClient(HTTP_X_API_KEY=key).get(f"/api/execution/{execution.pk}/artifacts.zip")
    stranger = HttpClient(HTTP_X_API_KEY=stranger_key).get(f"/api/execution/{execution.pk}/artifacts.zip")

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{execution.pk}.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert {name: archive.read(name).decode() for name in archive.namelist()} == {
            "README.md": "hi",
            "backend/app.py": "v2",
        }
    assert stranger.status_code == 404
    assert HttpClient().get(f"/api/execution/{execution.pk}/artifacts.zip").status_code == 401


def test_the_zip_leaves_out_paths_that_clash_across_tasks(execution):
    """Each output passed its own checks, but together `App.py`/`app.py` differ only in case and
    `docs` is a file and a folder: no checkout could hold both, so the first in order is kept."""
    make_task(execution, "task_1", files=[("src/App.py", "a"), ("docs", "file")], at=1)
    make_task(execution, "task_2", files=[("src/app.py", "b"), ("docs/guide.md", "guide")], at=2)
    with zipfile.ZipFile(io.BytesIO(result_aggregator.artifacts_zip(execution))) as archive:
        names = archive.namelist()
    assert sorted(names) == ["docs/guide.md", "src/App.py"]


def test_cancelling_ends_the_open_remediation_rounds_unresolved(execution):
    from executions.services import execution_cancel

    code = make_task(execution, "task_2", files=[("app.py", "v1")], at=1)
    make_task(execution, "task_2_fix1", kind="remediation", parent=code, status="running")
    conflict = Conflict.objects.create(
        execution=execution,
        kind="security_finding",
        between=["task_4", "task_2"],
        description="Security vs CodeGen on SQL injection",
        status="resolving",
        rounds=1,
        details={"tasks": ["task_4", "task_2", "task_2_fix1"]},
    )

    assert execution_cancel(execution, by="staff")

    conflict.refresh_from_db()
    assert conflict.status == "unresolved"
    assert conflict.resolution == "follow-up work did not finish: task_2_fix1 cancelled"
    assert Event.objects.filter(execution=execution, type="conflict.unresolved").count() == 1


def test_an_answers_bill_is_recognised_where_it_ends_the_answer(execution):
    for refund in (Decimal("0"), Decimal("1.10")):
        answer = "## Project complete\n\n" + result_aggregator.bill(execution, refund)
        assert result_aggregator.has_bill(answer)
        assert not result_aggregator.has_bill(answer + "\n\nMore words.")
    assert not result_aggregator.has_bill("Cancelled by client.")


def test_the_answer_ends_with_the_servers_record_as_settled_then_the_bill(execution):
    Execution.objects.filter(pk=execution.pk).update(
        status="aggregating",
        serial_estimate_sec=300,
        mode="parallel",
        started_at=timezone.now() - timedelta(seconds=100),
    )
    execution.refresh_from_db()
    tasks = [make_task(execution, "task_1")]
    facts = result_aggregator.synthesis_facts(execution, tasks, [], "completed", 1.0)
    facts["delivery"] = "`git clone http://oc.example/git/site.git`: 1 file changed"
    # The model is told what was built, not the figures the server states itself.
    assert not set(result_aggregator.RECORD_FACTS) & set(result_aggregator.told(facts))

    assert result_aggregator.finish(
        execution, "completed", response="We built it.", quality=1.0, record=facts
    )

    answer = Execution.objects.get(pk=execution.pk).final_response
    prose, record, bill = answer.split("\n\n")
    assert prose == "We built it."
    timeline, *rest = record.splitlines()
    # The timeline as settled, the answer's own call included (100 s and the test's own moments).
    assert re.fullmatch(
        r"\*\*Timeline:\*\* 10\ds wall clock in parallel mode vs 300s serial estimate \(6\d% faster\)",
        timeline,
    )
    assert rest == [
        "**Repository:** `git clone http://oc.example/git/site.git`: 1 file changed",
        "**Quality score:** 1.00",
        "**Status:** completed",
    ]
    assert bill == "**Cost:** $0.00 in model usage; project fee $0.00"
    assert result_aggregator.has_record(answer) and result_aggregator.has_bill(answer)
    # A record line a model writes in its prose is no record: the server's ends the answer.
    assert not result_aggregator.has_record("**Status:** completed\n\nAnd more words.")
    assert result_aggregator.has_record("Prose.\n\n**Status:** cancelled")
