"""Text and JSON every database can store. PostgreSQL's text and jsonb refuse the NUL character
(U+0000), and no database driver encodes an unpaired surrogate (U+D800–U+DFFF, which a JSON
`\\ud800` escape produces). A client's request, a model's reply, a file or a command's output may
hold either: in a client's request it is refused with a clear error (`unstorable_character`); in
what models, commands and other servers produce it is replaced by U+FFFD before it can reach a
transcript, a result or a ledger entry (`storable`, `decode`). A model's JSON is read without NaN
and Infinity (`json_loads`), which Python's reader takes and jsonb refuses.
"""

import json
import re
from typing import TypeVar

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"  # as a decoder shows bytes it cannot read
MAX_JSON_DEPTH = 64  # far deeper than any reply, plan or tool call; what is kept is walked recursively
T = TypeVar("T")


def _strings(value: object):
    """Every string of a JSON-like value, dict keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def unstorable_character(value: object) -> str | None:
    """What in a string, or in any string of a JSON-like value, no database stores ("a NUL character
    (U+0000)", "an unpaired surrogate (U+D800)"); None when there is nothing."""
    for text in _strings(value):
        found = UNSTORABLE.search(text)
        if found:
            code = ord(found.group())
            return "a NUL character (U+0000)" if code == 0 else f"an unpaired surrogate (U+{code:04X})"
    return None


def storable(value: T) -> T:
    """The value with each such character of its strings (dict keys included) replaced by U+FFFD;
    the value itself when it has none."""
    if unstorable_character(value) is None:
        return value
    if isinstance(value, str):
        return UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return type(value)(storable(v) for v in value)


def decode(data: bytes) -> str:
    """Bytes of a file or a command's output as storable text: UTF-8, unreadable bytes and NULs
    shown as U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\x00", REPLACEMENT)


def json_loads(text: str):
    """A model's JSON text, storable: NaN and Infinity (which Python's reader takes and jsonb
    refuses) read as null, and what its `\\u0000` and unpaired `\\ud800` escapes produce replaced.
    A value it makes null is then judged like any missing one (a dropped estimate, a wrong-typed
    argument). Raises ValueError (JSONDecodeError among others) for what it cannot read, and for
    JSON nested deeper than MAX_JSON_DEPTH, which the recursive walks of what is kept (this
    module's, the database's encoder) would not survive."""
    try:
        value = json.loads(text, parse_constant=lambda constant: None)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON is nested more than {MAX_JSON_DEPTH} deep")
    return storable(value)


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
