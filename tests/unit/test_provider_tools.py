"""Tool use through the official SDKs against servers speaking each wire format: tools offered,
tool calls read back from streamed replies, and the conversation sent back in each protocol's shape."""

import pytest

from pools.llm_types import Message, Tool, ToolCall, ToolResult
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.unit.test_providers import KEY_ENV, claude, fast_anthropic, fast_openai, minimax, request

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

WRITE = Tool(
    "write_file",
    "Write a file.",
    {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}},
)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    with FakeLLMServer() as fake:
        yield fake


PROVIDERS = [(fast_anthropic, claude), (fast_openai, minimax)]


@pytest.mark.parametrize(("provider", "spec"), PROVIDERS, ids=["anthropic", "openai"])
def test_tool_calls_stream_back_with_their_arguments(server, provider, spec):
    server.script(
        [
            Reply(
                text="Writing two files.",
                chunk_size=5,
                tool_calls=[
                    {
                        "id": "call_a",
                        "name": "write_file",
                        "arguments": {"path": "a.py", "content": "x = 1\n"},
                    },
                    {
                        "id": "call_b",
                        "name": "write_file",
                        "arguments": {"path": "b.py", "content": "y = 'é'\n"},
                    },
                ],
                usage={"input_tokens": 50, "output_tokens": 20},
            )
        ]
    )
    completion = provider.complete(spec(server), request(tools=(WRITE,)), None)
    assert completion.text == "Writing two files."
    assert completion.tool_calls == (
        ToolCall(
            "call_a", "write_file", {"path": "a.py", "content": "x = 1\n"}, completion.tool_calls[0].raw
        ),
        ToolCall(
            "call_b", "write_file", {"path": "b.py", "content": "y = 'é'\n"}, completion.tool_calls[1].raw
        ),
    )
    assert (completion.input_tokens, completion.output_tokens) == (50, 20)
    body = server.requests[-1].body
    if provider is fast_anthropic:
        assert body["tools"] == [
            {"name": "write_file", "description": "Write a file.", "input_schema": WRITE.parameters}
        ]
    else:
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "write_file",
                    "description": "Write a file.",
                    "parameters": WRITE.parameters,
                },
            }
        ]


@pytest.mark.parametrize(("provider", "spec"), PROVIDERS, ids=["anthropic", "openai"])
def test_arguments_that_are_not_a_json_object_are_kept_raw(server, provider, spec):
    server.script(
        [Reply(tool_calls=[{"id": "c1", "name": "write_file", "arguments": '{"path": "a.py", "con'}])]
    )
    completion = provider.complete(spec(server), request(tools=(WRITE,)), None)
    (call,) = completion.tool_calls
    assert call.arguments is None and call.raw == '{"path": "a.py", "con'


def test_anthropic_conversation_sends_tool_use_and_tool_result_blocks(server):
    call = ToolCall(
        "toolu_1", "write_file", {"path": "a.py", "content": "x"}, '{"path": "a.py", "content": "x"}'
    )
    history = (
        Message("assistant", "Let me write it.", tool_calls=(call,)),
        Message("tool", tool_results=(ToolResult("toolu_1", "write_file", "ok"),)),
    )
    fast_anthropic.complete(claude(server), request(tools=(WRITE,), history=history), None)
    messages = server.requests[-1].body["messages"]
    assert messages[1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me write it."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "write_file",
                    "input": {"path": "a.py", "content": "x"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "is_error": False}
            ],
        },
    ]


def test_openai_conversation_sends_tool_calls_and_tool_messages(server):
    call = ToolCall(
        "call_1", "write_file", {"path": "a.py", "content": "x"}, '{"path": "a.py", "content": "x"}'
    )
    history = (
        Message("assistant", "", tool_calls=(call,)),
        Message(
            "tool", tool_results=(ToolResult("call_1", "write_file", "error: refused path", is_error=True),)
        ),
    )
    fast_openai.complete(minimax(server), request(tools=(WRITE,), history=history), None)
    messages = server.requests[-1].body["messages"]
    assert messages[2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "write_file", "arguments": '{"path": "a.py", "content": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "error: refused path"},
    ]
