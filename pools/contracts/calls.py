"""The HTTP calls client code makes: which method, which path.

JavaScript/TypeScript: `fetch(url, {method})`, `axios.get(url)` (and the other verbs),
`axios(url, {method})`, `axios({url, method})`, `axios.request({…})`, and instances made by
`axios.create({baseURL})`, whose base path prefixes their calls. Python: `requests` and `httpx`
(module functions, `request(method, url)`, and clients made by `httpx.Client(base_url=…)`,
`httpx.AsyncClient`, `requests.Session()`, including `with … as client:`).

A URL is read from a string, a template literal or f-string, or a `+` concatenation; what is
interpolated is a parameter, except a leading base (`${API_URL}/api/x`, `f"{BASE}/api/x"`),
which is dropped. Absolute URLs count only for local hosts. A URL that is not literal enough to
know its path is not a call we can check, and is skipped.
"""

import ast
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .js_scan import Token, arguments, object_string

LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "[::1]", "{}"}
VERBS = ("get", "post", "put", "patch", "delete", "head", "options")
PY_CLIENT_MODULES = {"requests", "httpx"}
PY_CLIENT_FACTORIES = {"Client", "AsyncClient", "Session", "TestClient"}
BASE = "\x00"  # an interpolated value at the start of a URL


@dataclass(frozen=True)
class Call:
    file: str
    line: int
    method: str | None  # None: not known from the source
    path: str
    url: str  # as written, for the evidence


def url_path(raw: str) -> str | None:
    """The path a URL calls ("/api/x/{}"), or None when it is not a path on this backend."""
    text = raw.strip()
    if text.startswith(BASE):
        text = text.lstrip(BASE)
        if not text.startswith("/"):
            return None
    text = text.replace(BASE, "{}")
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        host = (parts.hostname or "").lower() if "{}" not in parts.netloc else "{}"
        if host not in LOCAL_HOSTS:
            return None
        text = parts.path or "/"
    if not text.startswith("/") or text.startswith("//"):
        return None
    return text.split("?", 1)[0].split("#", 1)[0]


# ---------------------------------------------------------------- JavaScript


def js_url(arg: list[Token]) -> str | None:
    """The URL text of an argument: strings, template literals and `+` joins of them."""
    pieces = []
    for token in arg:
        if token.kind == "str":
            pieces.append(token.value)
        elif token.kind == "tpl":
            for kind, text in token.parts:
                pieces.append(text if kind == "text" else BASE)
        elif token.kind == "punct" and token.value == "+":
            continue
        elif token.kind in ("ident", "num") or token.value in (".", "(", ")", "?."):
            if not pieces or pieces[-1] != BASE:
                pieces.append(BASE)
        else:
            return None
    if not pieces or all(p == BASE for p in pieces):
        return None
    return "".join(pieces)


def js_calls(path: str, tokens: list[Token]) -> list[Call]:
    calls: list[Call] = []
    bases: dict[str, str] = {}  # axios instances → their base path
    n = len(tokens)
    for i, token in enumerate(tokens):
        if token.kind != "ident":
            continue
        after_dot = i > 0 and tokens[i - 1].value in (".", "?.")
        value = token.value
        # const api = axios.create({ baseURL: "/api" })
        if (
            value in ("const", "let", "var")
            and i + 6 < n
            and [t.value for t in tokens[i + 2 : i + 7]] == ["=", "axios", ".", "create", "("]
        ):
            args = arguments(tokens, i + 6)
            base = object_string(args[0], "baseURL") if args else None
            bases[tokens[i + 1].value] = url_path(base or "") or "" if base is not None else ""
            continue
        if (
            value == "fetch"
            and i + 1 < n
            and tokens[i + 1].value == "("
            and (not after_dot or tokens[i - 2].value in ("window", "globalThis", "self"))
        ):
            args = arguments(tokens, i + 1)
            if args:
                method = object_string(args[1], "method") if len(args) > 1 else "GET"
                if len(args) > 1 and method is None and _has_key(args[1], "method"):
                    method = None  # a computed method
                elif method is None:
                    method = "GET"
                _add(calls, path, token.line, method, js_url(args[0]))
        elif value == "axios" or value in bases:
            if after_dot:
                continue
            base = bases.get(value, "")
            if i + 3 < n and tokens[i + 1].value == "." and tokens[i + 3].value == "(":
                verb = tokens[i + 2].value
                args = arguments(tokens, i + 3)
                if verb in VERBS and args:
                    _add(calls, path, token.line, verb.upper(), js_url(args[0]), base)
                elif verb == "request" and args:
                    _axios_config(calls, path, token.line, args[0], base)
            elif i + 1 < n and tokens[i + 1].value == "(":
                args = arguments(tokens, i + 1)
                if args and args[0] and args[0][0].value == "{":
                    _axios_config(calls, path, token.line, args[0], base)
                elif args:
                    method = object_string(args[1], "method") if len(args) > 1 else None
                    _add(calls, path, token.line, (method or "GET"), js_url(args[0]), base)
    return calls


def _has_key(arg: list[Token], key: str) -> bool:
    return any(t.value == key and t.kind in ("ident", "str") for t in arg)


def _axios_config(calls: list[Call], path: str, line: int, arg: list[Token], base: str) -> None:
    url = object_string(arg, "url")
    method = object_string(arg, "method")
    if url is not None:
        _add(calls, path, line, method or ("GET" if not _has_key(arg, "method") else None), url, base)


def _add(
    calls: list[Call], path: str, line: int, method: str | None, url: str | None, base: str = ""
) -> None:
    if url is None:
        return
    if base and not url.startswith(("http://", "https://", BASE)):
        url = base.rstrip("/") + "/" + url.lstrip("/")
    target = url_path(url)
    if target is not None:
        calls.append(Call(path, line, method.upper() if method else None, target, url.replace(BASE, "${…}")))


# ---------------------------------------------------------------- Python


def py_url(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else BASE for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = py_url(node.left), py_url(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else BASE) + (right if right is not None else BASE)
    return None


def python_calls(path: str, tree: ast.AST) -> list[Call]:
    modules = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name in PY_CLIENT_MODULES
    }
    clients: dict[str, str] = {}  # client variable → base path
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            pairs.append((node.targets[0].id, node.value))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if isinstance(item.optional_vars, ast.Name):
                    pairs.append((item.optional_vars.id, item.context_expr))
        for name, value in pairs:
            if isinstance(value, ast.Call) and _factory(value, modules):
                base = next((k.value for k in value.keywords if k.arg == "base_url"), None)
                base_url = py_url(base) if base is not None else None
                clients[name] = (url_path(base_url) or "") if base_url else ""
    calls: list[Call] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name) or not (owner.id in modules or owner.id in clients):
            continue
        base = clients.get(owner.id, "")
        verb = node.func.attr
        if verb in VERBS and node.args:
            _add(calls, path, node.lineno, verb.upper(), py_url(node.args[0]), base)
        elif verb == "request" and len(node.args) >= 2:
            method = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
            _add(
                calls,
                path,
                node.lineno,
                method if isinstance(method, str) else None,
                py_url(node.args[1]),
                base,
            )
    return calls


def _factory(call: ast.Call, modules: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id in modules and func.attr in PY_CLIENT_FACTORIES
    return isinstance(func, ast.Name) and func.id == "TestClient"


TEST_FILE = re.compile(r"(^|/)(tests?|__tests__|spec)/|(^|/)test_[^/]*$|_test\.\w+$|\.(test|spec)\.\w+$")


def is_test_file(path: str) -> bool:
    return bool(TEST_FILE.search(path))
