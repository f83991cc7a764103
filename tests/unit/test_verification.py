"""Verification of attempts with real tools, and the pure parts of aggregation (quality, merge)."""

import pytest

from pools import offline
from pools.verification import OutputBroken, verify_output


def reply(files=(), findings=()) -> dict:
    return {"summary": "s", "files": list(files), "findings": list(findings)}


def test_codegen_output_that_does_not_compile_is_broken():
    with pytest.raises(OutputBroken, match=r"app/models.py:2: Python syntax error"):
        verify_output(
            "codegen", reply([{"path": "app/models.py", "content": "class A:\n    def f(self)\n"}]), []
        )


def test_codegen_path_escaping_the_project_is_broken():
    with pytest.raises(OutputBroken, match="escapes the project"):
        verify_output("codegen", reply([{"path": "../../etc/cron.d/x.py", "content": "x = 1\n"}]), [])


BACKEND_PYTHON = [
    "backend/app/main.py",
    "backend/app/__init__.py",
    "backend/app/db.py",
    "backend/app/validation.py",
    "backend/tests/test_validation.py",
    "backend/tests/test_api.py",
]


def test_codegen_bandit_findings_join_the_models_with_sql_injection_raised_to_high():
    files = offline.backend_files(["menu_items"], sql_injection=True)
    model_finding = {
        "severity": "info",
        "title": "Consider pagination",
        "file": None,
        "line": None,
        "recommendation": "",
        "source": "model",
    }

    result = verify_output("codegen", reply(files, [model_finding]), [])

    assert result["findings"][0] == model_finding
    [bandit] = [f for f in result["findings"] if f["source"] == "bandit"]
    assert (bandit["rule"], bandit["severity"], bandit["file"]) == ("B608", "high", "backend/app/main.py")
    assert result["verification"]["bandit"] == {"scanned": BACKEND_PYTHON, "findings": 1}
    assert result["verification"]["passed"] is False


def test_a_heuristic_javascript_finding_is_recorded_but_does_not_fail_the_attempt():
    result = verify_output("codegen", reply([{"path": "web/app.js", "content": "function f() {\n"}]), [])

    assert result["findings"][0]["severity"] == "medium"
    assert result["verification"]["passed"] is True


def test_security_audit_scans_the_code_of_its_dependencies():
    deps = [
        {"key": "task_2", "pool": "codegen", "files": offline.backend_files(["bookings"], sql_injection=True)}
    ]

    result = verify_output("security", reply(), deps)

    assert [f["rule"] for f in result["findings"]] == ["B608"]
    assert result["verification"]["bandit"]["scanned"] == BACKEND_PYTHON


def test_database_schema_without_fk_indexes_is_rejected_not_broken():
    draft = offline.schema({"request": "restaurant bookings", "description": "schema"}, {"missing_fk_index"})

    result = verify_output("database", reply(draft["files"]), [])

    assert result["verification"]["schema_accepted"] is False
    assert {f["rule"] for f in result["findings"]} == {"fk-without-index"}
    revised = offline.schema(
        {"request": "restaurant bookings", "description": "schema", "kind": "revision"}, set()
    )
    assert verify_output("database", reply(revised["files"]), [])["verification"]["schema_accepted"] is True


def test_schema_that_does_not_apply_is_rejected_with_the_error():
    sql = "CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n"

    result = verify_output("database", reply([{"path": "schema.sql", "content": sql}]), [])

    assert result["verification"]["schema_accepted"] is False
    assert any(f["rule"] == "schema-apply" and "already exists" in f["title"] for f in result["findings"])


def test_database_output_without_sql_has_no_schema_verdict():
    result = verify_output("database", reply([{"path": "docs/backup.md", "content": "nightly pg_dump"}]), [])

    assert result["verification"]["schema_accepted"] is None
