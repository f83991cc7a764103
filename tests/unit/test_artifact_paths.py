"""The paths an agent may write: one path at a time, and the files of an output or tree together."""

import pytest

from pools.verification import OutputBroken, verify_output
from pools.verifiers.output_files import verify_files
from pools.verifiers.paths import path_problem, tree_problems

PROJECT = [
    "frontend/src/App.jsx",
    "backend/app/main.py",
    "db/schema.sql",
    "README.md",
    "tests/test_users.py",
]


def test_an_ordinary_project_passes():
    files = [{"path": path, "content": ""} for path in PROJECT]

    assert [path_problem(path) for path in PROJECT] == [None] * len(PROJECT)
    assert tree_problems(PROJECT) == []
    assert verify_files(files) == []


@pytest.mark.parametrize(
    "path",
    [
        ".gitignore",
        ".github/workflows/ci.yml",
        "docs/git/notes.md",
        "console.py",
        "auxiliary/setup.py",
        "com10.txt",
        "lpt/readme.md",
        "src/.env.example",
        "café/menü.py",
        "a b/c d.txt",
    ],
)
def test_names_that_only_resemble_a_refused_one_pass(path):
    assert path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty or missing path"),
        ("   ", "empty or missing path"),
        (None, "empty or missing path"),
        ("/etc/passwd", "absolute path"),
        ("C:/win.ini", "absolute path"),
        ("../outside.py", "escapes the project"),
        ("app/../../x.py", "escapes the project"),
        ("app\\views.py", "backslash"),
        ("..\\x.py", "backslash"),
        (".git/config", ".git folder"),
        ("sub/.GIT/hooks/pre-commit", ".git folder"),
        (".Git", ".git folder"),
        ("GIT~1/config", ".git folder"),
        ("a\x00b.py", "U+0000"),
        ("a\nb.py", "U+000A"),
        ("a\x1bb.py", "U+001B"),
        ("a\x7fb.py", "U+007F"),
        ("a\x85b.py", "U+0085"),
        ("a\x9bb.py", "U+009B"),
        ("invoice\u202etxt.exe", "U+202E"),
        ("src/\u202aa.py", "U+202A"),
        ("src/\u2066a.py", "U+2066"),
        ("src/\u2069a.py", "U+2069"),
        ("src/\u200ea.py", "U+200E"),
        ("src/\u200fa.py", "U+200F"),
        ("src/\u061ca.py", "U+061C"),
        ("src/.g\u200cit/config", "U+200C"),
        ("src/a\u2028b.py", "U+2028"),
        ("CON", "Windows device name"),
        ("src/con.py", "Windows device name"),
        ("Prn.txt", "Windows device name"),
        ("aux/x.py", "Windows device name"),
        ("nul.tar.gz", "Windows device name"),
        ("COM1", "Windows device name"),
        ("logs/com9.log", "Windows device name"),
        ("LPT1.txt", "Windows device name"),
        ("lpt9", "Windows device name"),
        ("NUL .txt", "Windows device name"),
        ("notes:secret.txt", "':'"),
        ("src/app.py:Zone.Identifier", "':'"),
        ("src/app.", "ends in a dot or a space"),
        ("src./app.py", "ends in a dot or a space"),
        ("src/app.py ", "ends in a dot or a space"),
        ("src /app.py", "ends in a dot or a space"),
        ("./app.py", "'.' component"),
        ("src//app.py", "empty component"),
        ("src/", "empty component"),
    ],
)
def test_refused_paths(path, problem):
    reason = path_problem(path)

    assert reason is not None and problem in reason
    [finding] = verify_files([{"path": path, "content": "x = 1\n"}])
    assert (finding.severity, finding.rule) == ("high", "unsafe-path")


def test_a_refused_path_is_shown_with_its_invisible_characters_escaped():
    [finding] = verify_files([{"path": "invoice\u202etxt.exe", "content": ""}])

    assert finding.file == "invoice\\u202etxt.exe"


@pytest.mark.parametrize(
    ("paths", "problems"),
    [
        (["App.py", "app.py"], ["'App.py' and 'app.py' differ only in case"]),
        (
            ["src/Models.py", "src/models.py", "src/MODELS.py"],
            [
                "'src/MODELS.py' and 'src/Models.py' differ only in case",
                "'src/MODELS.py' and 'src/models.py' differ only in case",
            ],
        ),
        (["Backend/a.py", "backend/b.py"], ["'Backend' and 'backend' differ only in case"]),
        (["Backend/a.py", "backend/a.py", "backend/x/b.py"], ["'Backend' and 'backend' differ only in case"]),
        (
            ["caf\u00e9.py", "cafe\u0301.py"],
            ["'cafe\u0301.py' and 'caf\u00e9.py' are one name in two Unicode forms (NFC and NFD)"],
        ),
        (["a/b", "a/b/c.py"], ["'a/b' is a file and also the folder of 'a/b/c.py'"]),
        (["docs", "docs/index.md", "docs/api.md"], ["'docs' is a file and also the folder of 'docs/api.md'"]),
        (["a/B", "a/b/c.py"], ["'a/B' and 'a/b' differ only in case"]),
    ],
)
def test_tree_problems(paths, problems):
    assert tree_problems(paths) == problems


def test_the_same_path_twice_and_refused_paths_are_no_tree_problem():
    assert tree_problems(["app.py", "app.py", "../App.py", ".git/app.py"]) == []


@pytest.mark.parametrize(
    ("paths", "reported_on"), [(["App.py", "app.py"], "app.py"), (["a/b", "a/b/c.py"], "a/b")]
)
def test_clashing_files_in_one_output_break_it(paths, reported_on):
    files = [{"path": path, "content": "x = 1\n"} for path in paths]

    [finding] = verify_files(files)
    assert (finding.severity, finding.rule, finding.file) == ("high", "path-clash", reported_on)
    with pytest.raises(OutputBroken, match="Paths clash"):
        verify_output("codegen", {"summary": "s", "files": files, "findings": []}, [])
