"""The Anthropic and OpenAI providers against a local server speaking the real wire protocols."""

import time

import anthropic
import openai
import pytest

from pools import llm
from pools.llm import LLMError, LLMRequest, LLMTimeout, ModelSpec
from pools.providers import AnthropicProvider, OpenAIProvider
from pools.storable import unstorable_character
from tests.fakes.llm_server import Drop, Error, FakeLLMServer, Reply, Slow

KEY_ENV = "FAKE_LLM_API_KEY"
# The config's claude-sonnet-4-5 is on the SDK's deprecation list; that is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    with FakeLLMServer() as fake:
        yield fake


def claude(server: FakeLLMServer, **kwargs) -> ModelSpec:
    return ModelSpec(
        name="claude-sonnet",
        provider="anthropic",
        model="claude-sonnet-4-5",
        base_url=server.anthropic_base_url,
        api_key_env=KEY_ENV,
        **kwargs,
    )


def minimax(server: FakeLLMServer, **kwargs) -> ModelSpec:
    return ModelSpec(
        name="minimax",
        provider="openai",
        model="MiniMax-M2.5",
        base_url=server.openai_base_url,
        api_key_env=KEY_ENV,
        **kwargs,
    )


def request(timeout: float = 5, **kwargs) -> LLMRequest:
    fields = {
        "purpose": "agent",
        "system": "You are the codegen agent.",
        "prompt": "Build a booking form.",
        "timeout": timeout,
        "expected_output_tokens": 100,
        **kwargs,
    }
    return LLMRequest(**fields)


# Fast backoff keeps the retry tests quick; the delays they assert come from retry-after.
fast_anthropic = AnthropicProvider(backoff_sec=0.01)
fast_openai = OpenAIProvider(backoff_sec=0.01)


def test_anthropic_streams_text_with_usage_and_progress(server):
    text = "x" * 400  # 100 tokens by the chars/4 rule, the expected output
    server.script(
        [
            Reply(
                text=text,
                chunk_size=8,
                chunk_delay=0.02,
                usage={
                    "input_tokens": 120,
                    "output_tokens": 97,
                    "cache_read_tokens": 30,
                    "cache_write_tokens": 12,
                },
            )
        ]
    )
    progress: list[float] = []

    started = time.monotonic()
    completion = fast_anthropic.complete(claude(server), request(), progress.append)
    elapsed = time.monotonic() - started

    assert completion.text == text
    assert (completion.input_tokens, completion.output_tokens) == (120, 97)
    assert (completion.cache_read_tokens, completion.cache_write_tokens) == (30, 12)
    assert (completion.model, completion.provider) == ("claude-sonnet-4-5", "anthropic")
    assert progress and progress == sorted(progress) and max(progress) <= 0.99
    assert len(progress) <= elapsed * 4 + 1  # throttled to ~4 a second

    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["system"] == "You are the codegen agent."
    assert sent.body["messages"] == [{"role": "user", "content": "Build a booking form."}]
    assert sent.body["stream"] is True
    assert "sk-test-123" in (sent.headers.get("x-api-key", "") + sent.headers.get("authorization", ""))
    assert sent.headers["x-stainless-retry-count"] == "0"


def test_openai_compatible_server_streams_text_with_usage_and_progress(server):
    text = "y" * 400
    server.script(
        [
            Reply(
                text=text,
                chunk_size=8,
                chunk_delay=0.02,
                usage={"input_tokens": 200, "output_tokens": 101, "cache_read_tokens": 50},
            )
        ]
    )
    progress: list[float] = []

    completion = fast_openai.complete(minimax(server), request(), progress.append)

    assert completion.text == text
    # The server reports prompt_tokens=250 of which 50 cached: billed once each.
    assert (completion.input_tokens, completion.cache_read_tokens, completion.output_tokens) == (200, 50, 101)
    assert (completion.model, completion.provider) == ("MiniMax-M2.5", "openai")
    assert progress and progress == sorted(progress) and max(progress) <= 0.99

    [sent] = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "MiniMax-M2.5"
    assert sent.body["messages"][0] == {"role": "system", "content": "You are the codegen agent."}
    assert sent.body["messages"][1] == {"role": "user", "content": "Build a booking form."}
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == "Bearer sk-test-123"


def test_openai_server_without_usage_is_estimated_at_four_chars_a_token(server):
    server.script([Reply(text="z" * 80, send_usage=False)])

    completion = fast_openai.complete(minimax(server), request(), None)

    assert completion.output_tokens == 20
    assert completion.input_tokens == -(-len("You are the codegen agent.Build a booking form.") // 4)


@pytest.mark.parametrize(
    "provider,spec", [(fast_anthropic, claude), (fast_openai, minimax)], ids=["anthropic", "openai"]
)
def test_implausible_token_counts_are_billed_by_the_estimate(server, provider, spec):
    # Negative counts would be a credit, a count past any window overflows the ledger's columns.
    server.script(
        [
            Reply(
                text="z" * 80,
                usage={"input_tokens": -50, "output_tokens": 10**30, "cache_read_tokens": -1},
            )
        ]
    )

    completion = provider.complete(spec(server), request(), None)

    assert completion.output_tokens == 20  # 80 characters at four a token
    assert completion.input_tokens == -(-len("You are the codegen agent.Build a booking form.") // 4)
    assert completion.cache_read_tokens == 0


@pytest.mark.parametrize("spec", [claude, minimax], ids=["anthropic", "openai"])
def test_a_servers_error_is_kept_storable_in_its_words(server, spec):
    # Its message becomes the attempt's error: no NUL (PostgreSQL) and no unpaired surrogate.
    server.script([Error(status=400, message="bad \x00 input \ud800")])

    with pytest.raises(LLMError) as raised:
        llm.complete(spec(server), request())

    assert "bad \ufffd input \ufffd" in str(raised.value)
    assert unstorable_character(str(raised.value)) is None


def test_server_rejecting_stream_options_is_asked_again_without_them(server):
    server.script(
        [
            Error(status=400, message="Unrecognized request argument supplied: stream_options"),
            Reply(text="v" * 40),
        ]
    )

    completion = fast_openai.complete(minimax(server), request(), None)

    assert completion.text == "v" * 40 and completion.output_tokens == 10
    first, second = server.requests
    assert "stream_options" in first.body and "stream_options" not in second.body


def test_reasoning_preamble_is_stripped(server):
    server.script([Reply(text='<think>plan the files</think>\n{"summary": "done"}')])

    assert fast_openai.complete(minimax(server), request(), None).text == '{"summary": "done"}'


def test_max_tokens_is_capped_by_the_model(server):
    fast_anthropic.complete(claude(server, max_output_tokens=1000), request(max_tokens=4096), None)
    fast_openai.complete(minimax(server), request(max_tokens=2048), None)

    assert server.requests[0].body["max_tokens"] == 1000
    assert server.requests[1].body["max_tokens"] == 2048


def test_rate_limit_waits_for_retry_after_then_succeeds(server):
    server.script([Error(status=429, retry_after=1), Reply(text="after the wait")])

    completion = fast_anthropic.complete(claude(server), request(), None)

    assert completion.text == "after the wait"
    first, second = server.requests
    assert 0.95 <= second.at - first.at < 3.0  # upper bound: room for a loaded machine


def test_openai_rate_limit_honours_retry_after_ms(server):
    server.script([Error(status=429, retry_after_ms=400), Reply(text="ok")])

    fast_openai.complete(minimax(server), request(), None)

    first, second = server.requests
    assert 0.38 <= second.at - first.at < 2.0


def test_overloaded_529_is_retried(server):
    server.script([Error(status=529), Reply(text="recovered")])

    assert fast_anthropic.complete(claude(server), request(), None).text == "recovered"
    assert len(server.requests) == 2


def test_overloaded_error_inside_a_stream_is_retried(server):
    server.script([Error(status=529, mid_stream=True), Reply(text="recovered")])

    assert fast_anthropic.complete(claude(server), request(), None).text == "recovered"
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider,spec", [(fast_anthropic, claude), (fast_openai, minimax)])
def test_server_error_then_success(server, provider, spec):
    server.script([Error(status=500), Reply(text="second time lucky")])

    assert provider.complete(spec(server), request(), None).text == "second time lucky"
    assert len(server.requests) == 2


def test_dropped_connection_is_retried(server):
    server.script([Drop(), Reply(text="reconnected")])

    assert fast_openai.complete(minimax(server), request(), None).text == "reconnected"


@pytest.mark.parametrize("provider,spec", [(fast_anthropic, claude), (fast_openai, minimax)])
def test_persistent_server_error_gives_up_retryable(server, provider, spec):
    server.script([Error(status=500, message="upstream exploded")] * 10)

    with pytest.raises(LLMError) as raised:
        provider.complete(spec(server), request(), None)

    assert raised.value.retryable is True
    assert not isinstance(raised.value, LLMTimeout)
    assert "500" in str(raised.value) and "upstream exploded" in str(raised.value)
    assert len(server.requests) == provider.retries + 1


@pytest.mark.parametrize("provider,spec", [(fast_anthropic, claude), (fast_openai, minimax)])
def test_bad_key_fails_at_once_not_retryable(server, provider, spec):
    server.script([Error(status=401, message="invalid x-api-key")])

    started = time.monotonic()
    with pytest.raises(LLMError) as raised:
        provider.complete(spec(server), request(), None)

    assert raised.value.retryable is False
    assert "invalid x-api-key" in str(raised.value)
    assert len(server.requests) == 1
    assert time.monotonic() - started < 1


def test_missing_key_variable_is_not_retryable(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)

    with pytest.raises(LLMError) as raised:
        fast_openai.complete(minimax(server), request(), None)

    assert raised.value.retryable is False and KEY_ENV in str(raised.value)
    assert server.requests == []


@pytest.mark.parametrize("provider,spec", [(fast_anthropic, claude), (fast_openai, minimax)])
def test_slow_reply_times_out_at_the_deadline(server, provider, spec):
    server.script([Slow(seconds=10)])

    started = time.monotonic()
    with pytest.raises(LLMTimeout) as raised:
        provider.complete(spec(server), request(timeout=1), None)

    assert 0.9 <= time.monotonic() - started < 3.0  # the deadline, not the 10 s reply
    assert raised.value.retryable is True


def test_trickling_stream_is_cut_at_the_deadline(server):
    # Every delta arrives well within the socket read timeout; only the overall deadline stops it.
    server.script([Reply(text="w" * 200, chunk_size=2, chunk_delay=0.05)])

    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        fast_anthropic.complete(claude(server), request(timeout=1), None)

    assert time.monotonic() - started < 3.0  # the deadline, not the 5 s the stream would take


def test_retry_after_beyond_the_deadline_fails_without_sleeping(server):
    server.script([Error(status=429, retry_after=30)])

    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        fast_anthropic.complete(claude(server), request(timeout=3), None)

    assert time.monotonic() - started < 1
    assert len(server.requests) == 1


def test_sdk_environment_applies_without_base_url(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    spec = ModelSpec(name="claude-opus", provider="anthropic", model="claude-opus-4-1")

    assert fast_anthropic.complete(spec, request(), None).text == "ok"
    assert "sk-from-env" in str(server.requests[0].headers)


def test_default_reply_sees_the_request_body(server):
    server.set_default_reply(lambda body: f"you asked for {body['model']}")

    assert fast_openai.complete(minimax(server), request(), None).text == "you asked for MiniMax-M2.5"


def test_fake_server_non_streaming_replies_parse_with_the_sdks(server):
    server.script(
        [Reply(text="plain", usage={"input_tokens": 5, "output_tokens": 2}), Reply(text="plain too")]
    )
    message = anthropic.Anthropic(
        base_url=server.anthropic_base_url, api_key="k", max_retries=0
    ).messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    chat = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0).chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}]
    )

    assert message.content[0].text == "plain" and message.usage.input_tokens == 5
    assert chat.choices[0].message.content == "plain too" and chat.usage.completion_tokens >= 1


def test_warming_builds_the_clients_the_calls_then_use(server, db):
    """What a booting worker does (`llm.warm_providers`): each keyed real profile's client is made
    once, and the first call finds it in the cache instead of building it on the critical path."""
    from pools import llm, providers
    from pools.models import ModelProfile

    providers._anthropic_client.cache_clear()
    providers._openai_client.cache_clear()
    prices = {"input_per_mtok": 3, "output_per_mtok": 15}
    ModelProfile.objects.create(
        name="claude",
        provider="anthropic",
        model="claude-sonnet-4-5",
        **prices,
        base_url=server.anthropic_base_url,
        api_key_env=KEY_ENV,
    )
    ModelProfile.objects.create(
        name="minimax",
        provider="openai",
        model="MiniMax-M2.5",
        **prices,
        base_url=server.openai_base_url,
        api_key_env=KEY_ENV,
    )
    ModelProfile.objects.create(
        name="keyless", provider="openai", model="gpt", api_key_env="NOBODY_SET_THIS_API_KEY", **prices
    )
    ModelProfile.objects.create(name="offline", provider="offline", model="openclaw-offline-1", **prices)

    assert sorted(llm.warm_providers()) == ["anthropic:claude-sonnet-4-5", "openai:MiniMax-M2.5"]
    assert providers._anthropic_client.cache_info().currsize == 1
    assert providers._openai_client.cache_info().currsize == 1

    fast_anthropic.complete(claude(server), request(), None)
    OpenAIProvider().complete(minimax(server), request(), None)
    assert providers._anthropic_client.cache_info().misses == 1  # the warmed client served the call
    assert providers._openai_client.cache_info().misses == 1
