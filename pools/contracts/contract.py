"""The plan's contract: its shape, its validation, and how a path matches a declared endpoint.

    {"endpoints": [{"method": "POST", "path": "/api/bookings", "request": {...}, "response": {...}}],
     "tables": [{"name": "bookings", "columns": {"id": "integer primary key", ...}}],
     "ownership": {"task_1": ["frontend/"], ...}}

`validate_contract` normalises a model's contract (methods upper-cased, ownership prefixes
without a trailing slash) and returns notes for what it dropped, or raises `ContractInvalid`
with every error, in words a model can act on when it is asked to repair its plan.

Paths compare segment by segment; a parameter segment (`{id}`, `:id`, `<int:id>`, `[id]`,
`${id}` or a number) matches any one segment.

A project keeps the endpoints and tables of the executions that landed on it (`project_part`); a
follow-up's plan amends them (`amend`): an endpoint (by method and path) or a table (by name) the
plan declares again replaces the stored one, a new one is added, and nothing is dropped. Ownership
names one execution's tasks, so it is never stored with the project.
"""

import re

from ..verifiers.paths import path_problem

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_ENDPOINTS = 200
MAX_TABLES = 100
MAX_COLUMNS = 200
MAX_PATH_CHARS = 200
MAX_PREFIXES = 50
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ENDPOINT_PATH = re.compile(r"^/[A-Za-z0-9_\-./{}:<>\[\]~]*$")
PARAM_SEGMENT = re.compile(r"\{[^/{}]*\}|:[A-Za-z_]\w*\??|<[^/<>]*>|\[[^/\[\]]+\]|\$\{[^}]*\}")
NUMBER_SEGMENT = re.compile(r"^\d+$")
PARAM = "{}"


class ContractInvalid(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def empty_contract() -> dict:
    return {"endpoints": [], "tables": [], "ownership": {}}


def project_part(contract: dict | None) -> dict:
    """What a project keeps of a contract: its endpoints and tables (ownership is an execution's)."""
    contract = contract or {}
    return {"endpoints": list(contract.get("endpoints", [])), "tables": list(contract.get("tables", []))}


def endpoint_key(endpoint: dict) -> tuple[str, tuple[str, ...]]:
    return endpoint["method"].upper(), segments(endpoint["path"])


def amend(stored: dict | None, amendment: dict | None) -> dict:
    """The stored contract with the amendment over it: the amendment's endpoints and tables replace
    the stored ones of the same method and path (or name), in place; new ones follow; the stored
    ones it does not name stay. The ownership is the amendment's."""
    stored, amendment = stored or {}, amendment or {}
    mine = {endpoint_key(e): e for e in amendment.get("endpoints", [])}
    endpoints = [mine.pop(endpoint_key(e), e) for e in stored.get("endpoints", [])]
    endpoints += list(mine.values())
    new_tables = {t["name"].lower(): t for t in amendment.get("tables", [])}
    tables = [new_tables.pop(t["name"].lower(), t) for t in stored.get("tables", [])]
    tables += list(new_tables.values())
    return {"endpoints": endpoints, "tables": tables, "ownership": dict(amendment.get("ownership", {}))}


def segments(path: str) -> tuple[str, ...]:
    """A URL path as segments, each parameter (or number) as `{}`; query and fragment dropped."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    parts = [part for part in path.strip().split("/") if part]
    return tuple(
        PARAM if PARAM_SEGMENT.search(part) or NUMBER_SEGMENT.match(part) else part for part in parts
    )


def paths_match(left: tuple[str, ...], right: tuple[str, ...]) -> bool:
    return len(left) == len(right) and all(
        a == b or PARAM in (a, b) for a, b in zip(left, right, strict=True)
    )


def show_path(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def owns(prefixes: list[str], path: str) -> bool:
    """Whether a path lies under one of the prefixes (a folder, or a file named exactly)."""
    return any(not prefix or path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def validate_contract(raw: object, task_ids: set[str]) -> tuple[dict, list[str]]:
    """The normalised contract and repair notes, or ContractInvalid with every error."""
    if not isinstance(raw, dict):
        raise ContractInvalid(['"contract" must be an object with "endpoints", "tables" and "ownership"'])
    errors: list[str] = []
    notes = [f"contract: unknown key {key[:40]!r} dropped" for key in raw if key not in empty_contract()]
    endpoints = _endpoints(raw.get("endpoints", []), errors)
    tables = _tables(raw.get("tables", []), errors)
    ownership = _ownership(raw.get("ownership", {}), task_ids, errors)
    if errors:
        raise ContractInvalid(errors)
    return {"endpoints": endpoints, "tables": tables, "ownership": ownership}, notes


def _endpoints(items: object, errors: list[str]) -> list[dict]:
    if not isinstance(items, list):
        errors.append('contract "endpoints" must be a list')
        return []
    if len(items) > MAX_ENDPOINTS:
        errors.append(f"contract has {len(items)} endpoints; at most {MAX_ENDPOINTS}")
        return []
    endpoints, seen = [], {}
    for index, item in enumerate(items, start=1):
        where = f"contract endpoint #{index}"
        if not isinstance(item, dict):
            errors.append(f"{where} is not an object")
            continue
        method, path = item.get("method"), item.get("path")
        if not isinstance(method, str) or method.upper() not in METHODS:
            errors.append(f"{where}: method {str(method)[:20]!r} is not one of {', '.join(METHODS)}")
            continue
        if not isinstance(path, str) or not path.startswith("/"):
            errors.append(f"{where}: path {str(path)[:60]!r} must start with '/'")
            continue
        if len(path) > MAX_PATH_CHARS or not ENDPOINT_PATH.match(path) or "//" in path:
            errors.append(f"{where}: path {path[:60]!r} is not a plain URL path (no query, spaces or '//')")
            continue
        method = method.upper()
        key = (method, segments(path))
        if key in seen:
            errors.append(f"duplicate endpoint {method} {path} (also #{seen[key]})")
            continue
        seen[key] = index
        shapes = {}
        for name in ("request", "response"):
            value = item.get(name) or {}
            if not isinstance(value, dict):
                errors.append(f"{where} ({method} {path}): {name} must be an object of field: type")
                value = {}
            shapes[name] = value
        endpoints.append({"method": method, "path": path, **shapes})
    return endpoints


def _tables(items: object, errors: list[str]) -> list[dict]:
    if not isinstance(items, list):
        errors.append('contract "tables" must be a list')
        return []
    if len(items) > MAX_TABLES:
        errors.append(f"contract has {len(items)} tables; at most {MAX_TABLES}")
        return []
    tables, seen = [], set()
    for index, item in enumerate(items, start=1):
        where = f"contract table #{index}"
        if not isinstance(item, dict):
            errors.append(f"{where} is not an object")
            continue
        name, columns = item.get("name"), item.get("columns")
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            errors.append(f"{where}: name {str(name)[:40]!r} is not an SQL identifier")
            continue
        if name.lower() in seen:
            errors.append(f"duplicate table {name}")
            continue
        seen.add(name.lower())
        if not isinstance(columns, dict) or not columns:
            errors.append(f"table {name}: columns must be a non-empty object of column: type")
            continue
        if len(columns) > MAX_COLUMNS:
            errors.append(f"table {name} has {len(columns)} columns; at most {MAX_COLUMNS}")
            continue
        bad = [str(c)[:40] for c, t in columns.items() if not IDENTIFIER.match(c) or not isinstance(t, str)]
        if bad:
            errors.append(f"table {name}: columns {', '.join(bad)} need an SQL identifier and a type string")
            continue
        lowered = [c.lower() for c in columns]
        if len(set(lowered)) != len(lowered):
            errors.append(f"table {name}: column names repeat (case-insensitively)")
            continue
        tables.append({"name": name, "columns": {c: t[:200] for c, t in columns.items()}})
    return tables


def _ownership(value: object, task_ids: set[str], errors: list[str]) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        errors.append('contract "ownership" must be an object of task id: [path prefixes]')
        return {}
    ownership = {}
    for task_id, prefixes in value.items():
        if task_id not in task_ids:
            errors.append(
                f"ownership names unknown task {str(task_id)[:40]!r} (tasks: {', '.join(sorted(task_ids))})"
            )
            continue
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            errors.append(f"ownership of {task_id} must be a list of path prefixes")
            continue
        if len(prefixes) > MAX_PREFIXES:
            errors.append(f"ownership of {task_id} has more than {MAX_PREFIXES} prefixes")
            continue
        cleaned = []
        for prefix in prefixes:
            stripped = prefix.strip().rstrip("/")
            problem = path_problem(stripped)
            if problem:
                errors.append(
                    f"ownership of {task_id}: prefix {prefix[:60]!r} is not a relative path ({problem})"
                )
            elif stripped not in cleaned:
                cleaned.append(stripped)
        ownership[task_id] = cleaned
    return ownership


def endpoint_label(endpoint: dict) -> str:
    return f"{endpoint['method']} {endpoint['path']}"
