"""A cheap bracket and quote balance scan of JavaScript and TypeScript, not a parser: no JS
toolchain is installed.

It skips comments, strings, template literals (with ${} nesting) and regex literals, so it
catches truncated replies and unbalanced edits, not every syntax error. JSX text may hold
apostrophes, so in .jsx/.tsx a quote left open at the end of a line is taken as text.
"""

import re


def js_imbalance(text: str, *, jsx: bool) -> tuple[str, int] | None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []  # opener ("(", "[", "{" or "${") and its line
    i, n, line = 0, len(text), 1
    last = ""  # last significant token character, to tell a regex from a division
    in_template = False
    while i < n:
        if in_template:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "\n":
                line += 1
            if c == "`":
                in_template, last = False, "`"
            elif text.startswith("${", i):
                stack.append(("${", line))
                in_template, last = False, "{"
                i += 1
            i += 1
            continue
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return "unterminated /* comment", line
            line += text.count("\n", i, end)
            i = end + 2
        elif c in "'\"":
            j = i + 1
            while j < n and text[j] not in (c, "\n"):
                j += 2 if text[j] == "\\" else 1
            if j >= n or text[j] == "\n":
                if not jsx:
                    return f"unterminated {c} string", line
                i = j
            else:
                i, last = j + 1, c
        elif c == "`":
            in_template = True
            i += 1
        elif (
            c == "/"
            and not (jsx and (last == "<" or text.startswith("/>", i)))
            and (last == "" or last in "(,=:[!&|?{};+-*%<>~^" or _ends_with_keyword(text, i))
        ):  # in JSX, `</tag>` and `/>` close tags, they start no regex
            j = i + 1
            in_class = False
            while j < n and text[j] != "\n" and (in_class or text[j] != "/"):
                if text[j] == "\\":
                    j += 1
                elif text[j] == "[":
                    in_class = True
                elif text[j] == "]":
                    in_class = False
                j += 1
            # A "regex" running into the end of the line was a division after all.
            i, last = (j + 1, "/") if j < n and text[j] == "/" else (i + 1, "/")
        elif c in "([{":
            stack.append((c, line))
            last = c
            i += 1
        elif c in ")]}":
            if not stack:
                return f"unexpected '{c}'", line
            opener, opened_at = stack.pop()
            if opener == "${" and c == "}":
                in_template = True
            elif opener != pairs[c]:
                return f"'{c}' closes '{opener}' opened on line {opened_at}", line
            last = c
            i += 1
        else:
            last = c
            i += 1
    if in_template:
        return "unterminated template literal", line
    if stack:
        opener, opened_at = stack[-1]
        return f"'{opener}' opened on line {opened_at} is never closed", opened_at
    return None


def _ends_with_keyword(text: str, i: int) -> bool:
    match = re.search(r"(\w+)\s*$", text[max(0, i - 12) : i])
    return bool(match) and match.group(1) in {
        "return",
        "typeof",
        "case",
        "do",
        "else",
        "in",
        "of",
        "new",
        "delete",
        "void",
        "throw",
        "yield",
        "await",
    }
