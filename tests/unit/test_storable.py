"""Text every database can store: NULs and unpaired surrogates found anywhere in JSON-like values,
and replaced; a model's JSON read storable."""

import json

import pytest

from pools.replies import ReplyError, parse_agent_reply
from pools.storable import decode, json_loads, storable, unstorable_character


def test_nuls_and_unpaired_surrogates_are_found_and_replaced_at_any_depth_keys_included():
    value = {"a\x00": ["ok", ("x\ud800y", 1)], "b": {"c": None, "d": "\x00"}}
    assert unstorable_character(value) == "a NUL character (U+0000)"
    assert unstorable_character(["ok", {"k": "\udfff"}]) == "an unpaired surrogate (U+DFFF)"
    assert unstorable_character({"a": ["ok", ("x\U0001f600y", 1.5, True, None)]}) is None  # a real emoji
    assert storable(value) == {"a\ufffd": ["ok", ("x\ufffdy", 1)], "b": {"c": None, "d": "\ufffd"}}
    assert unstorable_character(storable(value)) is None


def test_a_value_with_nothing_to_replace_is_given_back_as_it_is():
    clean = {"files": [{"path": "a.py", "content": "print(1)\n"}]}
    assert storable(clean) is clean


def test_bytes_decode_to_storable_text():
    assert decode(b"a\x00b\xffc\xc3\xa9") == "a\ufffdb\ufffdc\u00e9"


def test_a_models_json_is_read_storable_nan_and_infinity_as_null_nul_escapes_replaced():
    assert json_loads('{"content": "x\\u0000y\\ud800", "n": [1.5, NaN, Infinity, -Infinity]}') == {
        "content": "x\ufffdy\ufffd",
        "n": [1.5, None, None, None],
    }
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"a": ')
    with pytest.raises(ValueError, match="nested too deeply"):
        json_loads("[" * 100_000 + "]" * 100_000)
    assert json.dumps(json_loads("[" * 64 + "]" * 64)) == "[" * 64 + "]" * 64
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        json_loads('{"a": ' + "[" * 64 + "]" * 64 + "}")


@pytest.mark.parametrize(
    "hostile,error",
    [
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: the JSON is nested too deeply"),
        ('{"files": ' + "[" * 500 + "]" * 500 + "}", "invalid JSON: the JSON is nested more than 64 deep"),
        ('{"summary": "s", "n": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit"),
    ],
)
def test_a_reply_json_cannot_read_is_malformed_not_a_crash(hostile, error):
    with pytest.raises(ReplyError, match=error):
        parse_agent_reply(hostile)


def test_an_agent_reply_with_nan_or_a_nul_escape_is_kept_storable():
    reply = parse_agent_reply(
        '{"summary": "s\\u0000", "files": [{"path": "a.py", "content": "x = \'\\u0000\'\\n"}],'
        ' "findings": [{"severity": "low", "title": "t", "line": NaN}]}'
    )
    assert unstorable_character(reply.as_dict()) is None and reply.files[0]["content"] == "x = '\ufffd'\n"
    assert "NaN" not in json.dumps(reply.as_dict())
