"""Text and JSON every database can store. PostgreSQL's text and jsonb types refuse the NUL character
(U+0000), which a client's request, a model's reply, a file or a command's output may hold: a
client's NUL is refused with a clear error (`has_nul`), and what models and commands produce has it
replaced by U+FFFD before it can reach a transcript, a result or a ledger entry (`without_nul`,
`decode`). A model's JSON is read without NaN and Infinity (`json_loads`), which Python's reader
takes and jsonb refuses.
"""

import json
from typing import TypeVar

NUL = "\x00"
REPLACEMENT = "\ufffd"  # as a decoder shows bytes it cannot read
T = TypeVar("T")


def has_nul(value: object) -> bool:
    """Whether a string, or any string in a JSON-like value (dict keys included), holds a NUL."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def without_nul(value: T) -> T:
    """The value with every NUL of its strings (dict keys included) replaced; the value itself
    when it has none."""
    if not has_nul(value):
        return value
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT)
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return type(value)(without_nul(v) for v in value)


def decode(data: bytes) -> str:
    """Bytes of a file or a command's output as storable text: UTF-8, unreadable bytes and NULs
    shown as U+FFFD."""
    return data.decode("utf-8", errors="replace").replace(NUL, REPLACEMENT)


MAX_JSON_DEPTH = 64  # far deeper than any reply, plan or tool call; what is kept is walked recursively


def json_loads(text: str):
    """A model's JSON text, storable: NaN and Infinity (which Python's reader takes and jsonb
    refuses) read as null, and NULs its escapes (\\u0000) produce replaced. A value it makes
    null is then judged like any missing one (a dropped estimate, a wrong-typed argument).
    Raises ValueError (JSONDecodeError among others) for what it cannot read, and for JSON nested
    deeper than MAX_JSON_DEPTH, which the recursive walks of what is kept (this module's, the
    database's encoder) would not survive."""
    try:
        value = json.loads(text, parse_constant=lambda constant: None)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON is nested more than {MAX_JSON_DEPTH} deep")
    return without_nul(value)


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
