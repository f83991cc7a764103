"""The HTTP routes a backend serves, read from its source: FastAPI, Flask, Django (and
django-ninja), Express, and Next.js API routes.

Routers are followed to where they are mounted, across modules: FastAPI's `APIRouter(prefix=…)`
and `include_router(…, prefix=…)`, Flask's `Blueprint(url_prefix=…)` and
`register_blueprint(…, url_prefix=…)` (which replaces the blueprint's own), Django's `path()`,
`re_path()` and `include()`, django-ninja's `api.urls` and `add_router`, Express's
`express.Router()` and `app.use("/prefix", router)` (routers imported with `require` or `import`).
A router that nothing mounts serves nothing when the tree has an application: when some mount
could not be followed (a loop, a computed name), the routers it may have mounted are named in the
notes and their routes are not counted, since the path they are served at is unknown. Without any
application in the tree (a follow-up that adds a router to an app it did not write), a router
counts as served at its own prefix.
"""

import ast
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .js_scan import Token, arguments, closing, object_string

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
PY_APPS = {"FastAPI": "fastapi", "Flask": "flask", "NinjaAPI": "ninja"}
PY_ROUTERS = {"APIRouter": "router", "Blueprint": "blueprint", "Router": "router"}
JS_SUFFIXES = (".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx")
ANY_METHOD = "*"


@dataclass(frozen=True)
class Route:
    method: str  # upper-case, or "*" for any
    path: str
    file: str
    line: int
    handler: str = ""


@dataclass
class _Object:
    key: tuple[str, str]
    kind: str
    prefix: str
    line: int
    app: bool
    routes: list[tuple[str, str, int, str]] = field(default_factory=list)  # method, path, line, handler


@dataclass
class _Edge:
    parent: tuple[str, str]
    child: tuple  # an unresolved reference
    prefix: str | None  # None: no prefix given at the mount
    replaces_own: bool  # Flask: register_blueprint's url_prefix replaces the blueprint's


@dataclass
class RouteGraph:
    objects: dict[tuple[str, str], _Object] = field(default_factory=dict)
    edges: list[_Edge] = field(default_factory=list)
    py_imports: dict[str, dict[str, tuple]] = field(default_factory=dict)  # file → name → reference
    js_imports: dict[str, dict[str, tuple]] = field(default_factory=dict)
    js_exports: dict[str, dict[str, str]] = field(default_factory=dict)  # file → export → local name
    files: set[str] = field(default_factory=set)
    direct: list[Route] = field(default_factory=list)  # file-based routes (Next.js)


def join(*pieces: str | None) -> str:
    parts = [part for piece in pieces if piece for part in piece.split("/") if part]
    return "/" + "/".join(parts)


# ---------------------------------------------------------------- module resolution


def python_module_file(files: set[str], from_file: str, module: str | None, level: int) -> str | None:
    """The tree file a Python import names (relative to `from_file` when `level` > 0)."""
    parts = [p for p in (module or "").split(".") if p]
    if level:
        base = list(PurePosixPath(from_file).parent.parts)
        base = base[: len(base) - (level - 1)] if level > 1 else base
        stem = "/".join(base + parts)
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if candidate in files:
                return candidate
        return None
    if not parts:
        return None
    tail = "/".join(parts)
    matches = [f for f in files if f in (f"{tail}.py", f"{tail}/__init__.py")]
    matches += [f for f in files if f.endswith((f"/{tail}.py", f"/{tail}/__init__.py"))]
    if not matches:
        return None
    # Several projects in one tree: the one nearest the importing file.
    top = PurePosixPath(from_file).parts[:1]
    return sorted(matches, key=lambda f: (PurePosixPath(f).parts[:1] != top, len(f), f))[0]


def js_module_file(files: set[str], from_file: str, spec: str) -> str | None:
    if not spec.startswith("."):
        return None
    base = PurePosixPath(from_file).parent
    parts: list[str] = []
    for part in (base / spec).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    stem = "/".join(parts)
    for candidate in [stem, *(stem + s for s in JS_SUFFIXES), *(f"{stem}/index{s}" for s in JS_SUFFIXES)]:
        if candidate in files:
            return candidate
    return None


# ---------------------------------------------------------------- Python


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{param}" for v in node.values)
    return None


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _methods(call: ast.Call, default: list[str]) -> list[str]:
    value = _keyword(call, "methods")
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        found = [_literal(e) for e in value.elts]
        return [m.upper() for m in found if m] or default
    return default


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _reference(path: str, node: ast.AST) -> tuple | None:
    if isinstance(node, ast.Name):
        return ("py-name", path, node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return ("py-attr", path, node.value.id, node.attr)
    return None


def add_python(graph: RouteGraph, path: str, tree: ast.AST) -> None:
    imports: dict[str, tuple] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name.split(".")[0]] = (
                    "module",
                    alias.name if alias.asname else alias.name.split(".")[0],
                    0,
                )
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imports[alias.asname or alias.name] = ("from", node.module, node.level, alias.name)
    graph.py_imports[path] = imports
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    _python_object(graph, path, target.id, node.value)
            if any(isinstance(t, ast.Name) and t.id == "urlpatterns" for t in node.targets):
                _django_patterns(graph, path, node.value, "")
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Call)
        ):
            _python_object(graph, path, node.target.id, node.value)
        if isinstance(node, (ast.Assign, ast.AugAssign)) and isinstance(node.value, (ast.List, ast.BinOp)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "urlpatterns" for t in targets):
                _django_patterns(graph, path, node.value, "")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    _python_decorator(graph, path, node, decorator)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            _python_mount(graph, path, node)


def _python_object(graph: RouteGraph, path: str, name: str, call: ast.Call) -> None:
    callee = _callee(call)
    key = (path, name)
    if callee in PY_APPS:
        graph.objects[key] = _Object(key, PY_APPS[callee], "", call.lineno, True)
    elif callee in PY_ROUTERS:
        kind = PY_ROUTERS[callee]
        prefix = _literal(_keyword(call, "url_prefix" if kind == "blueprint" else "prefix")) or ""
        graph.objects[key] = _Object(key, kind, prefix, call.lineno, False)


def _python_decorator(graph: RouteGraph, path: str, function: ast.AST, decorator: ast.Call) -> None:
    func = decorator.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return
    key = (path, func.value.id)
    target = graph.objects.get(key)
    route = (
        _literal(decorator.args[0])
        if decorator.args
        else _literal(_keyword(decorator, "path") or _keyword(decorator, "rule"))
    )
    if route is None or not (route.startswith("/") or route == ""):
        return  # web frameworks' rules start with "/"; `@mock.patch("a.b")` is no route
    verb = func.attr
    if verb in HTTP_METHODS:
        methods = [verb.upper()]
    elif verb in ("route", "api_route"):
        methods = _methods(decorator, ["GET"])
    else:
        return
    if target is None:
        # A decorator on an object imported from elsewhere: the object is found when resolved.
        target = graph.objects.setdefault(key, _Object(key, "unknown", "", decorator.lineno, False))
    for method in methods:
        target.routes.append((method, route, decorator.lineno, function.name))


def _python_mount(graph: RouteGraph, path: str, call: ast.Call) -> None:
    func = call.func
    if not isinstance(func.value, ast.Name):
        return
    parent = (path, func.value.id)
    verb = func.attr
    if verb in ("include_router", "register_blueprint") and call.args:
        child = _reference(path, call.args[0])
        name = "prefix" if verb == "include_router" else "url_prefix"
        prefix = _literal(_keyword(call, name))
        graph.edges.append(_Edge(parent, child or ("unresolved",), prefix, verb == "register_blueprint"))
    elif verb == "add_router" and len(call.args) >= 2:
        child = _reference(path, call.args[1])
        graph.edges.append(_Edge(parent, child or ("unresolved",), _literal(call.args[0]), False))
    elif verb == "mount" and len(call.args) >= 2:
        child = _reference(path, call.args[1])
        if child:
            graph.edges.append(_Edge(parent, child, _literal(call.args[0]), False))
    elif verb in ("add_api_route", "add_url_rule") and call.args:
        route = _literal(call.args[0])
        if route is None:
            return
        target = graph.objects.setdefault(parent, _Object(parent, "unknown", "", call.lineno, False))
        for method in _methods(call, ["GET"]):
            target.routes.append((method, route, call.lineno, ""))


DJANGO_ROUTES = {"path", "re_path", "url"}


def django_regex_path(regex: str) -> str:
    text = regex.lstrip("^").rstrip("$")
    text = re.sub(r"\(\?P<\w+>[^)]*\)", "{param}", text)
    text = re.sub(r"\([^)]*\)", "{param}", text)
    return re.sub(r"[\\?+*]", "", text)


def _django_patterns(graph: RouteGraph, path: str, value: ast.AST, prefix: str) -> None:
    key = (path, "urlpatterns")
    target = graph.objects.setdefault(key, _Object(key, "django", "", getattr(value, "lineno", 1), True))
    items: list[ast.AST] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.BinOp):
            stack += [node.right, node.left]
        elif isinstance(node, (ast.List, ast.Tuple)):
            items += node.elts
    for item in items:
        if not (isinstance(item, ast.Call) and _callee(item) in DJANGO_ROUTES and len(item.args) >= 2):
            continue
        route = _literal(item.args[0])
        if route is None:
            continue
        if _callee(item) != "path":
            route = django_regex_path(route)
        full = join(prefix, route)
        view = item.args[1]
        if isinstance(view, ast.Call) and _callee(view) == "include" and view.args:
            included = view.args[0]
            if isinstance(included, ast.Tuple) and included.elts:
                included = included.elts[0]
            module = _literal(included)
            if module is not None:
                graph.edges.append(_Edge(key, ("py-module", path, module), full, False))
            elif isinstance(included, ast.List):
                _django_patterns(graph, path, included, full)
            continue
        if isinstance(view, ast.Attribute) and view.attr == "urls" and isinstance(view.value, ast.Name):
            graph.edges.append(_Edge(key, ("py-name", path, view.value.id), full, False))
            continue
        handler = (
            view.attr if isinstance(view, ast.Attribute) else view.id if isinstance(view, ast.Name) else ""
        )
        target.routes.append((ANY_METHOD, full, item.lineno, handler))


def _resolve_python(graph: RouteGraph, ref: tuple, depth: int = 0) -> tuple[str, str] | None:
    kind = ref[0]
    if kind == "py-name":
        _, path, name = ref
        if (path, name) in graph.objects:
            return (path, name)
        imported = graph.py_imports.get(path, {}).get(name)
        if imported and imported[0] == "from" and depth < 8:
            _, module, level, attr = imported
            source = python_module_file(graph.files, path, module, level)
            if source:
                return _resolve_python(graph, ("py-name", source, attr), depth + 1)
        return None
    if kind == "py-attr":
        _, path, base, attr = ref
        imported = graph.py_imports.get(path, {}).get(base)
        source = None
        if imported and imported[0] == "module":
            source = python_module_file(graph.files, path, imported[1], 0)
        elif imported and imported[0] == "from":
            _, module, level, name = imported
            source = python_module_file(graph.files, path, ".".join(p for p in (module, name) if p), level)
        if source and (source, attr) in graph.objects:
            return (source, attr)
        return None
    if kind == "py-module":
        _, path, module = ref
        source = python_module_file(graph.files, path, module, 0)
        if source and (source, "urlpatterns") in graph.objects:
            return (source, "urlpatterns")
        return None
    if kind in ("js", "js-require"):
        return _resolve_js(graph, ref, depth)
    return None


def _imported_object(graph: RouteGraph, path: str, name: str) -> tuple[str, str] | None:
    imported = graph.py_imports.get(path, {}).get(name)
    if imported and imported[0] == "from":
        _, module, level, attr = imported
        source = python_module_file(graph.files, path, module, level)
        if source:
            return _resolve_python(graph, ("py-name", source, attr), 1)
    return None


# ---------------------------------------------------------------- JavaScript


def add_javascript(graph: RouteGraph, path: str, tokens: list[Token]) -> None:
    imports: dict[str, tuple] = {}
    exports: dict[str, str] = {}
    n = len(tokens)
    for i, token in enumerate(tokens):
        value = token.value
        # const NAME = express() | express.Router() | Router() | new Router({prefix})
        if token.kind == "ident" and value in ("const", "let", "var") and i + 3 < n:
            name, eq = tokens[i + 1], tokens[i + 2]
            if name.kind == "ident" and eq.value == "=":
                _js_declaration(graph, path, name.value, tokens, i + 3, imports)
            elif name.value == "{" and name.kind == "punct":
                _js_destructure(graph, path, tokens, i + 1, imports)
        elif token.kind == "ident" and value == "import":
            _js_import(graph, path, tokens, i, imports)
        elif token.kind == "ident" and value == "export" and i + 1 < n:
            following = tokens[i + 1]
            if following.value == "default" and i + 2 < n and tokens[i + 2].kind == "ident":
                exports["default"] = tokens[i + 2].value
            elif following.value in ("const", "let", "var") and i + 2 < n:
                exports[tokens[i + 2].value] = tokens[i + 2].value
        elif token.kind == "ident" and value in ("module", "exports"):
            _js_export(tokens, i, exports)
    graph.js_imports[path] = imports
    graph.js_exports[path] = exports
    for i in range(n - 3):
        target, dot, verb, paren = tokens[i], tokens[i + 1], tokens[i + 2], tokens[i + 3]
        if not (target.kind == "ident" and dot.value == "." and verb.kind == "ident" and paren.value == "("):
            continue
        if i > 0 and tokens[i - 1].value == ".":
            continue
        key = (path, target.value)
        if verb.value in (*HTTP_METHODS, "all") and key in graph.objects:
            args = arguments(tokens, i + 3)
            route = _js_string(args[0]) if args else None
            if route is not None and len(args) >= 2:
                method = ANY_METHOD if verb.value == "all" else verb.value.upper()
                graph.objects[key].routes.append((method, route, verb.line, _js_handler(args[-1])))
        elif verb.value == "route" and key in graph.objects:
            args = arguments(tokens, i + 3)
            route = _js_string(args[0]) if args else None
            if route is not None:
                for method in _js_chain(tokens, closing(tokens, i + 3) + 1):
                    graph.objects[key].routes.append((method, route, verb.line, ""))
        elif verb.value == "use" and key in graph.objects:
            args = arguments(tokens, i + 3)
            prefix = _js_string(args[0]) if args else None
            for arg in args[1:] if prefix is not None else args:
                child = _js_reference(graph, path, arg)
                if child:
                    graph.edges.append(_Edge(key, child, prefix, False))


def _js_declaration(
    graph: RouteGraph, path: str, name: str, tokens: list[Token], j: int, imports: dict
) -> None:
    n = len(tokens)
    values = [t.value for t in tokens[j : j + 6]]
    key = (path, name)
    if values[:2] == ["express", "("]:
        graph.objects[key] = _Object(key, "express", "", tokens[j].line, True)
    elif values[:4] == ["express", ".", "Router", "("] or values[:2] == ["Router", "("]:
        graph.objects[key] = _Object(key, "express-router", "", tokens[j].line, False)
    elif values[:3] == ["new", "Router", "("]:
        args = arguments(tokens, j + 2)
        prefix = object_string(args[0], "prefix") if args else None
        graph.objects[key] = _Object(key, "express-router", prefix or "", tokens[j].line, False)
    elif values[:2] == ["require", "("] and j + 5 < n and tokens[j + 2].value == "express":
        if [t.value for t in tokens[j + 3 : j + 6]] == [")", ".", "Router"]:
            graph.objects[key] = _Object(key, "express-router", "", tokens[j].line, False)
    elif values[:2] == ["require", "("] and j + 2 < n and tokens[j + 2].kind == "str":
        imports[name] = ("js-module", tokens[j + 2].value, "default")
        if j + 4 < n and tokens[j + 3].value == ")" and tokens[j + 4].value == ".":
            imports[name] = (
                "js-module",
                tokens[j + 2].value,
                tokens[j + 5].value if j + 5 < n else "default",
            )


def _js_destructure(graph: RouteGraph, path: str, tokens: list[Token], j: int, imports: dict) -> None:
    end = closing(tokens, j)
    if end + 4 < len(tokens) and tokens[end + 1].value == "=" and tokens[end + 2].value == "require":
        spec = tokens[end + 4]
        if spec.kind == "str":
            for exported, local in _js_names(tokens[j + 1 : end]):
                imports[local] = ("js-module", spec.value, exported)


def _js_names(inner: list[Token]) -> list[tuple[str, str]]:
    """`{ a, b: c }` or `{ a, b as c }` as (exported, local) pairs."""
    pairs, i = [], 0
    while i < len(inner):
        token = inner[i]
        if token.kind == "ident" and token.value not in ("as", "type"):
            if i + 2 < len(inner) and inner[i + 1].value in (":", "as"):
                pairs.append((token.value, inner[i + 2].value))
                i += 3
                continue
            pairs.append((token.value, token.value))
        i += 1
    return pairs


def _js_import(graph: RouteGraph, path: str, tokens: list[Token], i: int, imports: dict) -> None:
    j, n = i + 1, len(tokens)
    names: list[tuple[str, str]] = []
    while j < n and not (tokens[j].kind == "ident" and tokens[j].value == "from"):
        token = tokens[j]
        if token.value == "{" and token.kind == "punct":
            end = closing(tokens, j)
            names += _js_names(tokens[j + 1 : end])
            j = end
        elif token.kind == "ident" and token.value not in ("type", "as") and tokens[j - 1].value != "as":
            names.append(("default", token.value))
        elif token.kind == "str" or token.value == ";":
            return
        j += 1
    if j + 1 < n and tokens[j + 1].kind == "str":
        for exported, local in names:
            imports[local] = ("js-module", tokens[j + 1].value, exported)


def _js_export(tokens: list[Token], i: int, exports: dict) -> None:
    values = [t.value for t in tokens[i : i + 6]]
    if values[:4] == ["module", ".", "exports", "="] and len(values) > 4:
        if tokens[i + 4].kind == "ident":
            exports["default"] = tokens[i + 4].value
        elif tokens[i + 4].value == "{":
            for exported, local in _js_names(tokens[i + 5 : closing(tokens, i + 4)]):
                exports[exported] = local
    elif (
        values[:3] == ["module", ".", "exports"] and len(values) > 5 and values[3] == "." and values[5] == "="
    ):
        if i + 6 < len(tokens):
            exports[values[4]] = tokens[i + 6].value
    elif (
        values[:2] == ["exports", "."]
        and len(values) > 3
        and values[3] == "="
        and i + 4 < len(tokens)
        and (i == 0 or tokens[i - 1].value != ".")
    ):
        exports[values[2]] = tokens[i + 4].value


def _js_string(arg: list[Token]) -> str | None:
    if len(arg) == 1 and arg[0].kind == "str":
        return arg[0].value
    if len(arg) == 1 and arg[0].kind == "tpl":
        return "".join(s if kind == "text" else "{param}" for kind, s in arg[0].parts)
    return None


def _js_handler(arg: list[Token]) -> str:
    return (
        arg[0].value if arg and arg[0].kind == "ident" and arg[0].value not in ("async", "function") else ""
    )


def _js_chain(tokens: list[Token], j: int) -> list[str]:
    methods = []
    while j + 2 < len(tokens) and tokens[j].value == "." and tokens[j + 2].value == "(":
        verb = tokens[j + 1].value
        if verb in HTTP_METHODS:
            methods.append(verb.upper())
        elif verb == "all":
            methods.append(ANY_METHOD)
        j = closing(tokens, j + 2) + 1
    return methods


def _js_reference(graph: RouteGraph, path: str, arg: list[Token]) -> tuple | None:
    if len(arg) == 1 and arg[0].kind == "ident":
        return ("js", path, arg[0].value)
    if len(arg) >= 4 and arg[0].value == "require" and arg[2].kind == "str":
        return ("js-require", path, arg[2].value)
    return None


def _resolve_js(graph: RouteGraph, ref: tuple, depth: int = 0) -> tuple[str, str] | None:
    if depth > 8:
        return None
    if ref[0] == "js-require":
        source = js_module_file(graph.files, ref[1], ref[2])
        local = graph.js_exports.get(source or "", {}).get("default")
        return _resolve_js(graph, ("js", source, local), depth + 1) if source and local else None
    _, path, name = ref
    if (path, name) in graph.objects:
        return (path, name)
    imported = graph.js_imports.get(path, {}).get(name)
    if imported:
        _, spec, exported = imported
        source = js_module_file(graph.files, path, spec)
        if source:
            local = graph.js_exports.get(source, {}).get(exported) or (
                exported if exported != "default" else None
            )
            if local:
                return _resolve_js(graph, ("js", source, local), depth + 1)
    return None


# ---------------------------------------------------------------- Next.js API routes


def add_nextjs(graph: RouteGraph, path: str, tokens: list[Token] | None) -> None:
    pure = PurePosixPath(path)
    if pure.suffix not in JS_SUFFIXES:
        return
    parts = list(pure.parts)
    if "pages" in parts and parts[parts.index("pages") + 1 : parts.index("pages") + 2] == ["api"]:
        start = parts.index("pages") + 1
        segments = parts[start:-1] + ([] if pure.stem == "index" else [pure.stem])
        graph.direct.append(Route(ANY_METHOD, join(*segments), path, 1, pure.stem))
    elif "app" in parts and pure.stem == "route":
        start = parts.index("app") + 1
        segments = [p for p in parts[start:-1] if not (p.startswith("(") and p.endswith(")"))]
        methods = []
        for i, token in enumerate(tokens or []):
            if token.value == "export" and token.kind == "ident":
                following = [t.value for t in (tokens or [])[i + 1 : i + 4]]
                for name in following:
                    if name.upper() == name and name.lower() in HTTP_METHODS:
                        methods.append((name, token.line))
                        break
        for method, line in methods or [(ANY_METHOD, 1)]:
            graph.direct.append(Route(method, join(*segments), path, line, method))


# ---------------------------------------------------------------- the routes served


def routes_served(graph: RouteGraph) -> tuple[list[Route], list[str]]:
    """Every route with its full path, and notes on what could not be followed."""
    notes: list[str] = []
    # Routes declared on an object this module imported belong to that object.
    for key, obj in list(graph.objects.items()):
        if obj.kind == "unknown":
            real = _imported_object(graph, *key)
            if real is not None and real != key and graph.objects[real].kind != "unknown":
                graph.objects[real].routes += obj.routes
                del graph.objects[key]
    children: dict[tuple[str, str], list[tuple[tuple[str, str], str | None, bool]]] = {}
    mounted: set[tuple[str, str]] = set()
    unresolved = 0
    for edge in graph.edges:
        child = _resolve_python(graph, edge.child) if edge.child[0] != "unresolved" else None
        if child is None:
            # An Express `use` of middleware resolves to nothing and is no mount; Python mounts are.
            if edge.child[0] in ("py-name", "py-attr", "py-module", "unresolved"):
                unresolved += 1
                notes.append(f"{edge.parent[0]}: a router mounted on {edge.parent[1]} could not be followed")
            continue
        children.setdefault(edge.parent, []).append((child, edge.prefix, edge.replaces_own))
        mounted.add(child)
    has_app = any(o.app for o in graph.objects.values())
    roots = [
        o
        for o in graph.objects.values()
        if o.key not in mounted and (o.app or o.kind == "unknown" or not has_app)
    ]
    for o in graph.objects.values():
        if o.key not in mounted and o not in roots and o.routes:
            if unresolved:
                notes.append(
                    f"{o.key[0]}: {o.key[1]} is not mounted where the reader could follow "
                    f"({unresolved} mount(s) could not be followed); its routes are not counted as served"
                )
            else:
                notes.append(f"{o.key[0]}: {o.key[1]} is never mounted; its routes are not served")
    routes: list[Route] = list(graph.direct)
    seen: set[tuple] = set()

    def walk(obj: _Object, prefix: str, stack: tuple) -> None:
        for method, path, line, handler in obj.routes:
            route = Route(method, join(prefix, path), obj.key[0], line, handler)
            if (route.method, route.path, route.file, route.line) not in seen:
                seen.add((route.method, route.path, route.file, route.line))
                routes.append(route)
        for child_key, mount_prefix, replaces in children.get(obj.key, []):
            if child_key in stack or len(stack) > 12:
                continue
            child = graph.objects[child_key]
            own = "" if replaces and mount_prefix is not None else child.prefix
            walk(child, join(prefix, mount_prefix, own), stack + (child_key,))

    for root in roots:
        walk(root, root.prefix, (root.key,))
    return routes, notes
