"""A small JavaScript/TypeScript tokenizer: enough to read calls like `fetch(url, {method})`,
`router.get("/x", …)` and `app.use("/api", router)`, not a parser.

Tokens are identifiers, numbers, punctuation, strings and template literals (with their text and
`${…}` parts). Comments are skipped, and so are regex literals (told from a division by the token
before them). In JSX, a quote left open at the end of its line is text (`<p>Don't</p>`), not a
string.
"""

import re
from dataclasses import dataclass, field

IDENT = re.compile(r"[A-Za-z_$][\w$]*")
NUMBER = re.compile(r"\d[\w.]*")
PUNCT3 = ("...", "===", "!==", "**=", "<<=", ">>=", "&&=", "||=", "??=")
PUNCT2 = ("=>", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "+=", "-=", "*=", "/=", "++", "--")
REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")
REGEX_KEYWORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw"}


@dataclass
class Token:
    kind: str  # "ident", "num", "punct", "str", "tpl"
    value: str  # the identifier, the punctuation, a string's text, a template's text with ${} as {}
    line: int
    parts: list[tuple[str, str]] = field(default_factory=list)  # tpl: ("text", s) and ("expr", source)


def tokenize(source: str, *, jsx: bool = False) -> list[Token]:
    return _Scanner(source, jsx).run()


class _Scanner:
    def __init__(self, text: str, jsx: bool):
        self.text, self.jsx, self.n = text, jsx, len(text)
        self.line = 1
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        i = 0
        text, n = self.text, self.n
        while i < n:
            c = text[i]
            if c == "\n":
                self.line += 1
                i += 1
            elif c.isspace():
                i += 1
            elif text.startswith("//", i):
                end = text.find("\n", i)
                i = n if end < 0 else end
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                end = n if end < 0 else end + 2
                self.line += text.count("\n", i, end)
                i = end
            elif c in "'\"":
                i = self._string(i, c)
            elif c == "`":
                parts, end, lines = template(text, i)
                value = "".join(s if kind == "text" else "{}" for kind, s in parts)
                self.tokens.append(Token("tpl", value, self.line, parts))
                self.line += lines
                i = end
            elif c == "/" and self._regex_allowed():
                i = self._regex(i)
            elif match := IDENT.match(text, i):
                self.tokens.append(Token("ident", match.group(), self.line))
                i = match.end()
            elif match := NUMBER.match(text, i):
                self.tokens.append(Token("num", match.group(), self.line))
                i = match.end()
            else:
                for size, table in ((3, PUNCT3), (2, PUNCT2)):
                    if text[i : i + size] in table:
                        self.tokens.append(Token("punct", text[i : i + size], self.line))
                        i += size
                        break
                else:
                    self.tokens.append(Token("punct", c, self.line))
                    i += 1
        return self.tokens

    def _string(self, i: int, quote: str) -> int:
        text, n = self.text, self.n
        j = i + 1
        chars = []
        while j < n and text[j] not in (quote, "\n"):
            if text[j] == "\\" and j + 1 < n:
                chars.append(text[j + 1])
                j += 2
                continue
            chars.append(text[j])
            j += 1
        if j >= n or text[j] == "\n":
            # An open quote: JSX text (an apostrophe), or a broken file; either way not a string.
            self.tokens.append(Token("punct", quote, self.line))
            return i + 1
        self.tokens.append(Token("str", "".join(chars), self.line))
        return j + 1

    def _regex_allowed(self) -> bool:
        if not self.tokens:
            return True
        last = self.tokens[-1]
        if last.kind == "punct":
            if self.jsx and last.value == "<":
                return False  # `</tag>`
            return last.value[-1] in REGEX_BEFORE or last.value in PUNCT2 + PUNCT3 and last.value != "++"
        return last.kind == "ident" and last.value in REGEX_KEYWORDS

    def _regex(self, i: int) -> int:
        text, n = self.text, self.n
        if self.jsx and text.startswith("/>", i):
            self.tokens.append(Token("punct", "/", self.line))
            return i + 1
        j, in_class = i + 1, False
        while j < n and text[j] != "\n" and (in_class or text[j] != "/"):
            if text[j] == "\\":
                j += 1
            elif text[j] == "[":
                in_class = True
            elif text[j] == "]":
                in_class = False
            j += 1
        if j < n and text[j] == "/":
            j += 1
            while j < n and text[j].isalpha():
                j += 1
            self.tokens.append(Token("regex", text[i:j], self.line))
            return j
        self.tokens.append(Token("punct", "/", self.line))  # a division after all
        return i + 1


def template(text: str, start: int) -> tuple[list[tuple[str, str]], int, int]:
    """The parts of the template literal opening at `start`, where it ends, and its newlines."""
    parts: list[tuple[str, str]] = []
    i, n = start + 1, len(text)
    chunk: list[str] = []
    while i < n and text[i] != "`":
        if text[i] == "\\" and i + 1 < n:
            chunk.append(text[i + 1])
            i += 2
        elif text.startswith("${", i):
            if chunk:
                parts.append(("text", "".join(chunk)))
                chunk = []
            end = _expression_end(text, i + 2)
            parts.append(("expr", text[i + 2 : end].strip()))
            i = end + 1
        else:
            chunk.append(text[i])
            i += 1
    if chunk:
        parts.append(("text", "".join(chunk)))
    end = min(i + 1, n)
    return parts, end, text.count("\n", start, end)


def _expression_end(text: str, i: int) -> int:
    """The index of the `}` closing a template's `${`, skipping nested braces, strings and templates."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            j = i + 1
            while j < n and text[j] not in (c, "\n"):
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "`":
            _, i, _ = template(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return n


def closing(tokens: list[Token], index: int) -> int:
    """The index of the token closing the bracket at `index` (or the last token)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    opener = tokens[index].value
    closer = pairs[opener]
    depth = 0
    for j in range(index, len(tokens)):
        token = tokens[j]
        if token.kind != "punct":
            continue
        if token.value == opener:
            depth += 1
        elif token.value == closer:
            depth -= 1
            if depth == 0:
                return j
    return len(tokens) - 1


def arguments(tokens: list[Token], open_index: int) -> list[list[Token]]:
    """The top-level, comma-separated arguments of the call whose `(` is at `open_index`."""
    end = closing(tokens, open_index)
    args: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[open_index + 1 : end]:
        if token.kind == "punct" and token.value in "([{":
            depth += 1
        elif token.kind == "punct" and token.value in ")]}":
            depth -= 1
        if depth == 0 and token.kind == "punct" and token.value == ",":
            args.append([])
            continue
        args[-1].append(token)
    return [arg for arg in args if arg]


def object_string(arg: list[Token], key: str) -> str | None:
    """The string value of `key` at the top level of an object literal argument, if it is a literal."""
    depth = 0
    for index, token in enumerate(arg):
        if token.kind == "punct" and token.value in "([{":
            depth += 1
        elif token.kind == "punct" and token.value in ")]}":
            depth -= 1
        elif (
            depth == 1
            and token.kind in ("ident", "str")
            and token.value == key
            and index + 2 < len(arg)
            and arg[index + 1].value == ":"
            and arg[index + 2].kind in ("str", "tpl")
        ):
            return arg[index + 2].value
    return None
