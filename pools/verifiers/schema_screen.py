"""Statements a schema file may not hold, found before any of it runs.

A schema declares tables, indexes, views and triggers. PRAGMA changes the SQLite engine (some
pragmas, like `hard_heap_limit`, for the whole process), ATTACH opens and creates files, VACUUM
INTO writes one, load_extension() loads native code: none belongs in a schema, so they are refused
with a reason. `PRAGMA foreign_keys = ON`, common at the top of SQLite schemas, is left out with a
note instead: the scratch database enforces foreign keys anyway.

The scan reads SQL the way SQLite's tokenizer does, so comments, string literals and quoted
identifiers neither hide a statement nor make one up.
"""

import re
from dataclasses import dataclass, field

# Statements refused by their first keyword (after any EXPLAIN [QUERY PLAN], which for a PRAGMA
# still applies it: SQLite runs most pragmas while compiling them).
REFUSED_STATEMENTS = {
    "PRAGMA": "it changes the SQLite engine, not the schema",
    "ATTACH": "it opens or creates another database file",
    "DETACH": "it belongs with ATTACH, which a schema may not use",
    "VACUUM": "VACUUM INTO writes a file, and a schema has nothing to vacuum",
}
FOREIGN_KEYS_ON = re.compile(r"PRAGMA\s+foreign_keys\s*=\s*(ON|1|TRUE|YES)\s*;?", re.IGNORECASE)
# Identifiers (bare or quoted) refused anywhere: functions that load code or run a PRAGMA.
REFUSED_FUNCTIONS = {"load_extension": "it loads native code into the process"}
PRAGMA_FUNCTION_PREFIX = "pragma_"


@dataclass
class Screened:
    """A schema with its harmless engine settings left out, and why the rest may not run."""

    sql: str
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Statement:
    start: int
    end: int  # just past its `;`, or the end of the text
    line: int
    words: list[str] = field(default_factory=list)  # bare words, upper-cased
    identifiers: list[str] = field(default_factory=list)  # bare and quoted, lower-cased


def screen_schema(sql: str) -> Screened:
    """The schema without `PRAGMA foreign_keys = ON`, and a reason per statement it may not hold."""
    screened = Screened(sql=sql)
    left_out: list[_Statement] = []
    for statement in _statements(sql):
        words = statement.words
        while words[:1] == ["EXPLAIN"] or words[:2] == ["QUERY", "PLAN"]:
            words = words[2:] if words[0] == "QUERY" else words[1:]
        text = sql[statement.start : statement.end].strip()
        where = f"line {statement.line}"
        if words[:1] == ["PRAGMA"] and FOREIGN_KEYS_ON.fullmatch(text):
            left_out.append(statement)
            screened.notes.append(f"skipped: {text} (the scratch database enforces foreign keys)")
        elif words and words[0] in REFUSED_STATEMENTS:
            screened.refused.append(f"{where}: {words[0]} is refused: {REFUSED_STATEMENTS[words[0]]}")
        for name in dict.fromkeys(statement.identifiers):
            if name in REFUSED_FUNCTIONS:
                screened.refused.append(f"{where}: {name}() is refused: {REFUSED_FUNCTIONS[name]}")
            elif name.startswith(PRAGMA_FUNCTION_PREFIX):
                screened.refused.append(f"{where}: {name} is refused: it is a PRAGMA in function form")
    for statement in reversed(left_out):
        screened.sql = screened.sql[: statement.start] + screened.sql[statement.end :]
    return screened


def _statements(sql: str) -> list[_Statement]:
    """The text's statements (split at `;` outside comments, strings and quoted identifiers),
    with their words; statements without any word (blank, comments only) are left out."""
    statements: list[_Statement] = []
    current = _Statement(0, 0, 1)
    i, n, line = 0, len(sql), 1
    while i < n:
        char = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2  # SQLite ends an unterminated comment at the text's end
            line += sql.count("\n", i, end)
            i = end
        elif char in "'\"`[":
            close = "]" if char == "[" else char
            j = i + 1
            while j < n:
                if sql[j] == close:
                    if close != "]" and sql.startswith(close * 2, j):
                        j += 2  # a doubled quote is the quote itself
                        continue
                    break
                j += 1
            if char != "'":
                current.identifiers.append(sql[i + 1 : j].replace(close * 2, close).lower())
            line += sql.count("\n", i, j)
            i = j + 1
        elif char == ";":
            current.end = i + 1
            if current.words or current.identifiers:
                statements.append(current)
            i += 1
            current = _Statement(i, i, line)
        elif _is_word_char(char) and not char.isdigit():
            j = i + 1
            while j < n and _is_word_char(sql[j]):
                j += 1
            word = sql[i:j]
            if not current.words and not current.identifiers:
                current.start, current.line = i, line
            current.words.append(word.upper())
            current.identifiers.append(word.lower())
            i = j
        else:
            if char == "\n":
                line += 1
            i += 1
    current.end = n
    if current.words or current.identifiers:
        statements.append(current)
    return statements


def _is_word_char(char: str) -> bool:
    # SQLite's identifier characters: ASCII letters, digits, `_`, `$` and every non-ASCII character.
    return not char.isascii() or char.isalnum() or char in "_$"
