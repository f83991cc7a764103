"""Text every database can store: NULs found anywhere in JSON-like values, and replaced."""

from pools.storable import decode, has_nul, without_nul


def test_nuls_are_found_and_replaced_at_any_depth_keys_included():
    value = {"a\x00": ["ok", ("x\x00y", 1)], "b": {"c": None, "d": "\x00"}}
    assert has_nul(value) and not has_nul({"a": ["ok", ("xy", 1.5, True, None)]})
    assert without_nul(value) == {"a\ufffd": ["ok", ("x\ufffdy", 1)], "b": {"c": None, "d": "\ufffd"}}
    assert not has_nul(without_nul(value))


def test_a_value_without_nul_is_given_back_as_it_is():
    clean = {"files": [{"path": "a.py", "content": "print(1)\n"}]}
    assert without_nul(clean) is clean


def test_bytes_decode_to_storable_text():
    assert decode(b"a\x00b\xffc\xc3\xa9") == "a\ufffdb\ufffdc\u00e9"
