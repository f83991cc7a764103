"""The agent's tool loop over a real workspace and the real sandbox: the offline agent's own loop, a
model scripted through the real Anthropic and OpenAI SDKs, and hostile tool calls."""

import json
import os
import time

import pytest
from django.conf import settings

from pools.agent_loop import Hooks, LoopStopped, TurnsExhausted, run_loop
from pools.agent_tools import COMMAND_LIMIT, ToolError, Workspace
from pools.llm_types import LLMRequest, ModelSpec
from pools.replies import ReplyError
from pools.storable import unstorable_character
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.unit.test_providers import KEY_ENV, claude, minimax

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def offline(**options) -> ModelSpec:
    return ModelSpec(name="offline", provider="offline", model="openclaw-offline-1", options=options)


def agent_request(role: str = "codegen", description: str = "Build the booking backend API") -> LLMRequest:
    return LLMRequest(
        purpose="agent",
        system="You are an agent.",
        prompt=f"Your task ({role} pool): {description}",
        timeout=60,
        pool=role,
        role=role,
        meta={
            "request": "A restaurant site with bookings",
            "description": description,
            "pool_latency_sec": 0.0,
        },
    )


class Recorder:
    """The caller's side of the loop: keeps every turn, may stop before a given turn."""

    def __init__(self, stop_before: int | None = None):
        self.turns = []
        self.stop_before = stop_before

    def before(self, number: int) -> None:
        if number == self.stop_before:
            raise LoopStopped("cancelled", "stopped by the test")

    def after(self, turn) -> None:
        self.turns.append(turn)

    def hooks(self) -> Hooks:
        return Hooks(self.before, self.after)


def loop(spec, request, workspace, recorder, *, max_turns=16):
    return run_loop(
        spec,
        request,
        workspace,
        max_turns=max_turns,
        deadline=time.monotonic() + 60,
        run_timeout_sec=30,
        hooks=recorder.hooks(),
    )


@pytest.fixture
def workspace():
    # Where workers keep theirs: a folder the sandbox's unprivileged user can reach (pytest's tmp_path
    # is private to root).
    with Workspace({}, parent=settings.OPENCLAW_WORKSPACES_DIR) as ws:
        yield ws


def test_the_offline_agent_writes_runs_its_tests_and_finishes(workspace):
    recorder = Recorder()
    result = loop(offline(), agent_request(), workspace, recorder)
    names = [[call["name"] for call in turn.tool_calls] for turn in recorder.turns]
    assert names[0][-1] == "write_file" and set(names[0]) == {"write_file"}
    assert names[1:] == [["run"], ["finish"]]
    # It runs its folder's whole suite, as the gate will: its files' test and the validation tests.
    assert recorder.turns[1].tool_calls[0]["arguments"] == {"command": "cd backend && python3 -m pytest -q"}
    run = json.loads(recorder.turns[1].tool_results[0]["content"])
    assert run["exit_code"] == 0 and not run["timed_out"], run["output"]
    assert result.tests == {"passed": 5, "failed": 0}
    paths = [f["path"] for f in result.reply.files]
    assert "backend/app/main.py" in paths and "backend/tests/test_backend_files.py" in paths
    assert [turn.final for turn in recorder.turns] == [False, False, True]


def test_a_failing_test_is_seen_fixed_and_run_again(workspace):
    recorder = Recorder()
    result = loop(offline(flaws=["failing_test"]), agent_request(), workspace, recorder)
    names = [[call["name"] for call in turn.tool_calls] for turn in recorder.turns]
    assert names[1:] == [["run"], ["write_file"], ["run"], ["finish"]]
    first, second = (json.loads(recorder.turns[n].tool_results[0]["content"]) for n in (1, 3))
    assert first["exit_code"] != 0 and "README.md" in first["output"]
    assert second["exit_code"] == 0
    assert [run.exit_code == 0 for run in result.runs] == [False, True]
    assert result.tests == {"passed": 5, "failed": 0}


def test_the_security_agent_lists_what_it_audits():
    files = {"backend/app/main.py": "import os\n"}
    with Workspace(files, parent=settings.OPENCLAW_WORKSPACES_DIR) as ws:
        recorder = Recorder()
        result = loop(offline(), agent_request("security", "Audit the backend"), ws, recorder)
    assert [t.tool_calls[0]["name"] for t in recorder.turns] == ["list_files", "finish"]
    assert recorder.turns[0].tool_results[0]["content"] == "backend/app/main.py  10"
    assert result.reply.files == [] and result.reply.findings


def test_the_caller_can_stop_the_loop_before_a_call(workspace):
    recorder = Recorder(stop_before=2)
    with pytest.raises(LoopStopped):
        loop(offline(), agent_request(), workspace, recorder)
    assert len(recorder.turns) == 1


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    with FakeLLMServer() as fake:
        yield fake


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


@pytest.mark.parametrize("spec", [claude, minimax], ids=["anthropic", "openai"])
def test_a_model_through_the_sdk_fixes_its_failing_test(server, workspace, spec):
    failing = "def test_total():\n    from calc import total\n    assert total([1, 2]) == 4\n"
    server.script(
        [
            Reply(tool_calls=[call("list_files")]),
            Reply(
                text="Writing the module and its test.",
                tool_calls=[
                    call("write_file", path="calc.py", content="def total(xs):\n    return sum(xs)\n"),
                    call("write_file", path="tests/test_calc.py", content=failing),
                ],
            ),
            Reply(tool_calls=[call("run", command="python3 -m pytest -q tests")]),
            Reply(
                tool_calls=[call("write_file", path="tests/test_calc.py", content=failing.replace("4", "3"))]
            ),
            Reply(tool_calls=[call("run", command="python3 -m pytest -q tests")]),
            Reply(tool_calls=[call("finish", summary="calc with a passing test", findings=[])]),
        ]
    )
    recorder = Recorder()
    result = loop(spec(server), agent_request(), workspace, recorder)
    assert [r.exit_code for r in result.runs] == [1, 0]
    assert result.tests == {"passed": 1, "failed": 0}
    assert result.reply.summary == "calc with a passing test"
    assert {f["path"]: f["content"] for f in result.reply.files}["tests/test_calc.py"].endswith("== 3\n")
    assert len(server.requests) == 6
    # The model saw the failure: the third request's conversation ends with the failing run's output.
    last = json.dumps(server.requests[3].body["messages"][-1])
    assert "1 failed" in last


def test_hostile_tool_calls_are_answered_with_errors_and_the_loop_goes_on(server, workspace):
    outside = workspace.root.parent / "outside.txt"
    outside.write_text("secret")
    server.script(
        [
            Reply(
                tool_calls=[
                    call("rm_rf", path="/"),
                    call("read_file"),
                    call("write_file", path="a.py", content=42),
                    call("write_file", path="../outside.txt", content="x"),
                    call("read_file", path="/etc/shadow"),
                    {"name": "write_file", "arguments": '{"path": "a.py", "cont'},
                    {"name": "write_file", "arguments": '{"path": "a.py", "content": NaN}'},
                    {
                        "name": "write_file",
                        "arguments": '{"path": "a.py", "content": ' + "[" * 500 + "]" * 500 + "}",
                    },
                    call("run", command="x" * (COMMAND_LIMIT + 1)),
                    call("run", command=f"ln -s {outside} link.txt; ln -s {outside.parent} dir"),
                ]
            ),
            Reply(
                tool_calls=[
                    call("read_file", path="link.txt"),
                    call("write_file", path="link.txt", content="overwrite"),
                    call("write_file", path="dir/outside.txt", content="overwrite"),
                ]
            ),
            Reply(tool_calls=[call("finish", summary="nothing done")]),
        ]
    )
    recorder = Recorder()
    result = loop(claude(server), agent_request(), workspace, recorder)
    first = [r["content"] for r in recorder.turns[0].tool_results]
    assert first[0].startswith("error: unknown tool 'rm_rf'")
    assert first[1] == 'error: argument "path" must be a string'
    assert first[2] == 'error: argument "content" must be a string'
    assert first[3] == "error: refused path: path escapes the project with '..'"
    assert first[4] == "error: refused path: absolute path"
    assert first[5].startswith("error: the arguments of write_file are not a JSON object")
    assert first[6] == 'error: argument "content" must be a string'  # NaN reads as null
    assert first[7].startswith("error: the arguments of write_file are not a JSON object")  # 500 deep
    assert first[8].startswith(f"error: command longer than {COMMAND_LIMIT} characters")
    assert json.loads(first[9])["exit_code"] == 0
    second = [r["content"] for r in recorder.turns[1].tool_results]
    assert all("goes through a symbolic link" in text for text in second), second
    assert outside.read_text() == "secret"
    assert result.reply.files == []


@pytest.mark.parametrize("spec", [claude, minimax], ids=["anthropic", "openai"])
def test_unstorable_characters_of_the_model_and_of_commands_never_reach_what_is_kept(server, workspace, spec):
    # PostgreSQL stores no NUL in text or jsonb: transcripts and results get U+FFFD in its place.
    server.script(
        [
            Reply(
                text="Writing\x00\ud800",  # a NUL and an unpaired surrogate: no database stores them
                tool_calls=[
                    call("write_file", path="a.py", content="x = '\x00'\n"),
                    call("run", command="printf 'a\\0b'; printf 'c\\0d' > c.txt"),
                ],
            ),
            Reply(tool_calls=[call("read_file", path="c.txt"), call("finish", summary="done\x00")]),
        ]
    )
    recorder = Recorder()
    result = loop(spec(server), agent_request(), workspace, recorder)
    kept = [(t.text, t.tool_calls, t.tool_results) for t in recorder.turns]
    assert unstorable_character(kept) is None and unstorable_character(result.reply.as_dict()) is None
    assert recorder.turns[0].text == "Writing\ufffd\ufffd"
    assert json.loads(recorder.turns[0].tool_results[1]["content"])["output"] == "a\ufffdb"
    assert recorder.turns[1].tool_results[0]["content"] == "c\ufffdd"
    assert result.reply.summary == "done\ufffd"
    assert {f["path"]: f["content"] for f in result.reply.files}["a.py"] == "x = '\ufffd'\n"


def test_max_turns_without_finish_ends_the_loop(server, workspace):
    server.set_default_reply(lambda body: Reply(tool_calls=[call("list_files")]))
    recorder = Recorder()
    with pytest.raises(TurnsExhausted, match=r"max_turns \(3\) reached without finish"):
        loop(claude(server), agent_request(), workspace, recorder, max_turns=3)
    assert len(server.requests) == 3 and len(recorder.turns) == 3


def test_a_reply_without_tool_calls_is_read_as_the_single_reply_contract(server, workspace):
    reply = {"summary": "one shot", "files": [{"path": "x.py", "content": "x = 1\n"}], "findings": []}
    server.script([Reply(text=json.dumps(reply))])
    result = loop(minimax(server), agent_request(), workspace, Recorder())
    assert result.reply.files == reply["files"] and result.turns == 1


def test_a_plain_text_reply_is_pointed_at_the_tools_once_then_fails(server, workspace):
    server.set_default_reply(lambda body: "I think the code is fine.")
    recorder = Recorder()
    with pytest.raises(ReplyError):
        loop(claude(server), agent_request(), workspace, recorder)
    assert len(server.requests) == 2
    assert "Call a tool, or call finish" in server.requests[1].body["messages"][-1]["content"]
    assert [t.final for t in recorder.turns] == [False, True]


def test_the_workspace_starts_with_the_dependencies_files_and_outputs_only_what_was_written():
    with Workspace(
        {"db/schema.sql": "CREATE TABLE t (id int);", "../evil": "x"}, parent=settings.OPENCLAW_WORKSPACES_DIR
    ) as ws:
        assert ws.list_files() == "db/schema.sql  24"
        assert ws.output_files() == []
        ws.write_file("db/schema.sql", "CREATE TABLE t (id bigint);")
        assert ws.output_files() == [{"path": "db/schema.sql", "content": "CREATE TABLE t (id bigint);"}]
        root = ws.root
    assert not os.path.exists(root)


def test_reads_never_block_on_a_fifo_and_cut_a_large_file(workspace):
    os.mkfifo(workspace.root / "pipe")
    (workspace.root / "big.txt").write_text("x" * 100_000)
    with pytest.raises(ToolError, match="not a regular file"):
        workspace.read_file("pipe")
    text = workspace.read_file("big.txt")
    assert len(text) < 21_000 and text.endswith("the first 20000 characters shown]")
    with pytest.raises(ToolError, match="no such file"):
        workspace.read_file("missing.txt")


def test_the_offline_agent_writes_and_tests_under_the_folder_it_owns(workspace):
    request = agent_request(description="Build the booking frontend pages")
    request.meta["owned"] = ["src/task_2"]
    result = loop(offline(), request, workspace, Recorder())
    paths = {f["path"] for f in result.reply.files}
    assert paths and all(p.startswith("src/task_2/") for p in paths), paths
    assert "src/task_2/tests/test_src_task_2_files.py" in paths
    assert result.tests == {"passed": 2, "failed": 0}  # the test finds the files where they went


def test_a_flaws_file_outside_the_owned_folder_stays_where_the_flaw_puts_it(workspace):
    request = agent_request(description="Build the booking frontend pages")
    request.meta["owned"] = ["src/task_2"]
    result = loop(offline(flaws=["ownership_violation"]), request, workspace, Recorder())
    paths = {f["path"] for f in result.reply.files}
    assert "backend/app/cors.py" in paths and "src/task_2/package.json" in paths
