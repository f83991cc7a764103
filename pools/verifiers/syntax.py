"""Does a file's content parse for its type: Python, JSON, YAML, TOML and SQL with their parsers,
JavaScript and TypeScript with a bracket balance scan. Nothing is executed."""

import json
import re
import tomllib
from pathlib import PurePosixPath

import sqlglot
import yaml

from .findings import Finding
from .js_balance import js_imbalance
from .sqlglot_lock import SQLGLOT

JS_SUFFIXES = {".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs"}


def _not_json(constant: str) -> None:
    # Python's reader takes NaN and Infinity; JSON, and every other reader of the file, does not.
    raise ValueError(f"{constant} is not a JSON value")


def parse_check(path: str, content: str) -> Finding | None:
    """A syntax finding when the content does not parse for the file's type, else None."""
    suffix = PurePosixPath(path).suffix.lower()
    try:
        if suffix == ".py":
            compile(content, path, "exec", dont_inherit=True)
        elif suffix == ".json":
            json.loads(content, parse_constant=_not_json)
        elif suffix in (".yaml", ".yml"):
            list(yaml.safe_load_all(content))
        elif suffix == ".toml":
            tomllib.loads(content)
        elif suffix == ".sql":
            return _sql_parse_check(path, content)
        elif suffix in JS_SUFFIXES:
            return _js_balance_check(path, content, jsx=suffix in (".jsx", ".tsx"))
    except SyntaxError as exc:
        return _syntax_finding(path, f"Python syntax error: {exc.msg}", exc.lineno)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return _syntax_finding(path, f"Invalid YAML: {exc}".split("\n")[0], mark.line + 1 if mark else None)
    except tomllib.TOMLDecodeError as exc:  # before ValueError, its base class
        match = re.search(r"line (\d+)", str(exc))
        return _syntax_finding(path, f"Invalid TOML: {exc}", int(match.group(1)) if match else None)
    except ValueError as exc:  # json.JSONDecodeError, and NUL bytes in Python source
        return _syntax_finding(path, f"Invalid {suffix[1:].upper()}: {exc}", getattr(exc, "lineno", None))
    return None


def _syntax_finding(path: str, title: str, line: int | None, severity: str = "high") -> Finding:
    return Finding(
        severity,
        title,
        file=path,
        line=line,
        rule="syntax",
        recommendation="Fix the syntax so the file parses.",
    )


def _sql_parse_check(path: str, content: str) -> Finding | None:
    first_error = None
    # The dialect is unknown; a file any common dialect parses is fine.
    for dialect in (None, "postgres", "mysql", "sqlite"):
        try:
            with SQLGLOT:
                sqlglot.parse(content, read=dialect)
            return None
        except sqlglot.errors.SqlglotError as exc:
            first_error = first_error or exc
    detail = (getattr(first_error, "errors", None) or [{}])[0]
    message = detail.get("description") or str(first_error).split("\n")[0]
    return _syntax_finding(path, f"Invalid SQL: {message}", detail.get("line"))


def _js_balance_check(path: str, content: str, *, jsx: bool) -> Finding | None:
    """The heuristic `js_imbalance` scan: a medium finding, as it may be wrong."""
    problem = js_imbalance(content, jsx=jsx)
    if problem is None:
        return None
    message, line = problem
    return _syntax_finding(
        path, f"Unbalanced source (bracket/quote check): {message}", line, severity="medium"
    )
