"""Verification of agent outputs with real tools: parsers, bandit, a scratch SQLite database."""

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from pools.verifiers import bandit_scan
from pools.verifiers.bandit_scan import run_bandit
from pools.verifiers.findings import Finding
from pools.verifiers.output_files import verify_files
from pools.verifiers.schema import check_schema


def test_valid_files_pass():
    files = [
        {"path": "app/views.py", "content": "def index(request):\n    return {'ok': True}\n"},
        {"path": "config/settings.json", "content": '{"debug": false}'},
        {"path": "deploy/app.yaml", "content": "name: web\nports:\n  - 80\n---\nname: worker\n"},
        {"path": "pyproject.toml", "content": '[project]\nname = "booking"\n'},
        {"path": "db/schema.sql", "content": "CREATE TABLE t (id SERIAL PRIMARY KEY, data JSONB);"},
        {"path": "web/src/app.ts", "content": "const re = /[(]/g;\nconst s = `a ${f({x: 1})} b`; // ({\n"},
        {
            "path": "web/src/Page.tsx",
            "content": "export const P = () => (\n  <p>Don't {count} (stop)</p>\n);\n",
        },
        {
            "path": "web/src/List.tsx",
            "content": "export const L = ({rows}) => (\n"
            "  <ul>{rows.map((r) => <li key={r.id}>{r.name}</li>)}</ul>\n);\n",
        },
        {"path": "web/src/Img.jsx", "content": "export const I = ({src}) => <div><img src={src} /></div>;\n"},
        {"path": "README.md", "content": "anything ( goes"},
    ]

    assert verify_files(files) == []


def test_python_syntax_error_is_flagged_with_its_line():
    [finding] = verify_files(
        [{"path": "app/models.py", "content": "class Booking:\n    def save(self)\n        pass\n"}]
    )

    assert finding.severity == "high" and finding.rule == "syntax"
    assert finding.file == "app/models.py" and finding.line == 2
    assert "Python syntax error" in finding.title


def test_bad_json_yaml_toml_and_sql_are_flagged():
    findings = verify_files(
        [
            {"path": "a.json", "content": '{"a": 1,}'},
            {"path": "b.yml", "content": "a: [1, 2\nb: 3\n"},
            {"path": "c.toml", "content": "[project\nname = 1\n"},
            {"path": "d.sql", "content": "CREATE TABLE (id int"},
        ]
    )

    assert [f.file for f in findings] == ["a.json", "b.yml", "c.toml", "d.sql"]
    assert all(f.severity == "high" for f in findings)
    assert findings[0].line == 1 and findings[2].line == 1
    # Python's reader takes NaN and Infinity; JSON (and every other reader of the file) does not.
    [nan] = verify_files([{"path": "e.json", "content": '{"a": NaN, "b": -Infinity}'}])
    assert nan.file == "e.json" and nan.title == "Invalid JSON: NaN is not a JSON value"


def test_truncated_javascript_is_flagged_as_heuristic():
    [finding] = verify_files(
        [{"path": "web/app.js", "content": "function f() {\n  if (x) {\n    go('a');\n}\n"}]
    )

    assert finding.severity == "medium" and "never closed" in finding.title and finding.line == 1


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.py", "app/../../x.py", "C:\\win.ini", "a\x00b.py", ""]
)
def test_unsafe_paths_are_high(path):
    [finding] = verify_files([{"path": path, "content": "x = 1\n"}])

    assert finding.severity == "high" and finding.rule == "unsafe-path"


def test_finding_as_dict_matches_the_agent_contract():
    finding = Finding("high", "t", file="a.py", line=3, recommendation="r", source="bandit", rule="B602")

    assert finding.as_dict() == {
        "severity": "high",
        "title": "t",
        "file": "a.py",
        "line": 3,
        "recommendation": "r",
        "source": "bandit",
        "rule": "B602",
    }


VULNERABLE = """\
import subprocess


def run(command):
    subprocess.call(command, shell=True)


def find_user(cursor, q):
    cursor.execute("SELECT * FROM users WHERE name = '%s'" % q)


def calc(expr):
    return eval(expr)


DB_PASSWORD = "hunter2-prod"
"""


def test_bandit_flags_shell_sql_eval_and_hardcoded_password():
    findings = run_bandit(
        [
            {"path": "app/services/users.py", "content": VULNERABLE},
            {"path": "app/templates/base.html", "content": "<html></html>"},
            {"path": "tests/test_users.py", "content": "def test_x():\n    assert True\n"},
        ]
    )

    by_rule = {f.rule: f for f in findings}
    assert by_rule["B602"].severity == "high" and by_rule["B602"].line == 5
    assert by_rule["B608"].severity == "medium" and "parameterized" in by_rule["B608"].recommendation
    assert by_rule["B307"].severity == "medium" and by_rule["B307"].line == 13
    assert by_rule["B105"].severity == "low" and "environment" in by_rule["B105"].recommendation
    assert "B101" not in by_rule  # asserts in tests are not findings
    assert {f.file for f in findings} == {"app/services/users.py"}
    assert all(f.source == "bandit" and f.title for f in findings)


def test_bandit_on_clean_or_no_python_code_finds_nothing():
    assert run_bandit([{"path": "app/ok.py", "content": "def add(a, b):\n    return a + b\n"}]) == []
    assert run_bandit([{"path": "index.html", "content": "<p>hi</p>"}]) == []


def test_bandit_ignores_the_models_nosec_comments():
    findings = run_bandit(
        [
            {
                "path": "app/run.py",
                "content": "import subprocess  # nosec\nsubprocess.call(cmd, shell=True)  # nosec B602\n",
            }
        ]
    )

    assert {(f.rule, f.line) for f in findings} == {("B404", 1), ("B602", 2)}


def test_bandit_scans_every_python_file_written_whatever_its_folder_or_suffix_case():
    shell = "import os\nos.system(command)\n"
    findings = run_bandit(
        [
            {"path": "app/Run.PY", "content": shell},
            {"path": "vendor/.tox/hidden.py", "content": shell},
            {"path": "lib/x.egg/hidden.py", "content": shell},
        ]
    )

    assert sorted((f.file, f.rule) for f in findings) == [
        ("app/Run.PY", "B605"),
        ("lib/x.egg/hidden.py", "B605"),
        ("vendor/.tox/hidden.py", "B605"),
    ]


# A list of a million literals: bandit's parse of it needs far more than 128 MB.
HUGE_LITERAL = "x = [" + "1, " * 1_000_000 + "]\n"


def test_a_file_too_big_for_bandits_memory_limit_is_reported_not_passed(monkeypatch):
    monkeypatch.setattr(bandit_scan, "MEMORY_BYTES", 128 * 2**20)
    findings = run_bandit(
        [
            {"path": "app/data.py", "content": HUGE_LITERAL},
            {"path": "app/io.py", "content": "import pickle\n"},
        ]
    )

    assert sorted((f.file, f.rule, f.severity) for f in findings) == [
        ("app/data.py", "bandit-skipped", "medium"),
        ("app/io.py", "B403", "low"),  # the other file is scanned all the same
    ]
    [skipped] = [f for f in findings if f.rule == "bandit-skipped"]
    assert skipped.title == "Security scan skipped this file: exception while scanning file"


def test_a_scan_past_its_deadline_is_stopped_and_says_so(monkeypatch):
    monkeypatch.setattr(bandit_scan, "TIMEOUT_SEC", 0.3)
    started = time.monotonic()
    [finding] = run_bandit([{"path": "app/data.py", "content": HUGE_LITERAL}])

    assert (finding.rule, finding.severity) == ("bandit-error", "medium")
    assert finding.title == "Security scan did not run: timed out after 0.3s"
    assert time.monotonic() - started < 5
    assert multiprocessing.active_children() == []  # the child was killed and reaped


def test_bandit_runs_in_a_child_not_in_this_process():
    code = "import sys\nfrom pools.verifiers.bandit_scan import run_bandit\n"
    code += "found = run_bandit([{'path': 'a.py', 'content': 'import pickle\\n'}])\n"
    code += "print([f.rule for f in found], 'bandit' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert done.stdout == "['B403'] False\n", done.stderr


# A worker's main is the `dramatiq` script; each scan's child runs it again, as "__mp_main__", and
# this one notes whether the import it makes was loaded already (from the fork server).
WORKER_MAIN = """
import os, sys
if __name__ == "__mp_main__":
    with open(os.environ["MARKS"], "a") as marks:
        marks.write(f"{'dramatiq.cli' in sys.modules}\\n")
from dramatiq.__main__ import main  # all that the `dramatiq` script imports
if __name__ == "__main__":
    from pools.verifiers.bandit_scan import run_bandit
    for _ in range(2):
        print([f.rule for f in run_bandit([{"path": "a.py", "content": "import pickle\\n"}])])
"""


def test_a_scan_child_of_a_worker_finds_its_main_scripts_imports_loaded(tmp_path):
    main, marks = tmp_path / "worker_main.py", tmp_path / "marks"
    main.write_text(WORKER_MAIN)
    env = {**os.environ, "MARKS": str(marks), "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, str(main)], capture_output=True, text=True, timeout=60, env=env)

    assert done.stdout == "['B403']\n['B403']\n", done.stderr
    assert marks.read_text().split() == ["True", "True"]  # one per scan, each with nothing to import


UNINDEXED = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
CREATE TABLE tables (id INTEGER PRIMARY KEY, seats INTEGER NOT NULL);
CREATE TABLE bookings (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    table_id INTEGER NOT NULL REFERENCES tables(id),
    starts_at TEXT NOT NULL
);
CREATE INDEX idx_bookings_table_time ON bookings (table_id, starts_at);
"""


def test_foreign_keys_without_an_index_are_high_findings():
    report = check_schema(UNINDEXED, path="db/schema.sql")

    assert report.applied and report.tables == ["bookings", "customers", "tables"]
    [finding] = report.findings  # table_id leads idx_bookings_table_time
    assert finding.severity == "high" and finding.source == "schema" and finding.file == "db/schema.sql"
    assert "bookings(customer_id)" in finding.title
    assert finding.recommendation == "CREATE INDEX idx_bookings_customer_id ON bookings (customer_id);"
    assert not report.accepted


def test_schema_is_accepted_once_indexed():
    report = check_schema(UNINDEXED + check_schema(UNINDEXED).findings[0].recommendation)

    assert report.applied and report.findings == [] and report.accepted


def test_postgres_schema_is_transpiled_and_applied():
    schema = """
    CREATE EXTENSION IF NOT EXISTS pgcrypto;
    CREATE TABLE public.customers (
        id SERIAL PRIMARY KEY,
        email VARCHAR(255) NOT NULL UNIQUE,
        preferences JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
    );
    CREATE TABLE payments (
        id BIGSERIAL PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        token UUID DEFAULT gen_random_uuid(),
        paid_at TIMESTAMP WITH TIME ZONE
    );
    ALTER TABLE ONLY public.payments ADD CONSTRAINT payments_customer_fk
        FOREIGN KEY (customer_id) REFERENCES customers(id);
    CREATE INDEX payments_customer_idx ON payments USING btree (customer_id);
    CREATE INDEX customers_prefs_idx ON customers USING GIN (preferences);
    """

    report = check_schema(schema, "postgresql")

    assert report.applied and report.errors == []
    assert report.translated_from == "postgres"
    assert report.tables == ["customers", "payments"]
    assert report.accepted  # the FK added by ALTER TABLE is indexed
    assert any("EXTENSION" in note for note in report.notes)


def test_postgres_is_recognised_without_a_dialect_and_its_fk_checked():
    report = check_schema("""
        CREATE TABLE users (id BIGSERIAL PRIMARY KEY, profile JSONB);
        CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, user_id BIGINT REFERENCES users(id), at TIMESTAMPTZ);
    """)

    assert report.translated_from == "postgres" and report.applied
    assert [f.rule for f in report.findings] == ["fk-without-index"]


def test_garbage_sql_is_rejected_with_an_error():
    report = check_schema("CREATE TABLE bookings (id INTEGER PRIMARY KEY,, oops")

    assert not report.applied and not report.accepted and report.errors
