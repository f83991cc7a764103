"""Intent classification: which pool a task belongs to, and which work streams a request needs.

Keyword scores, not a model: cheap, deterministic and explainable. The seed's examples are the
test cases (tests/test_task_distributor.py).
"""

import re
from dataclasses import dataclass

from pools.contracts.derive import (
    AREAS,
    BUILDS,
    CHECKOUT_FLOW,
    SHOP_WORDS,
    STATIC_SITE,
    asks_for_new,
    entities,
    sells_online,
)

# (pattern, weight) per pool; patterns match whole words or stems at a word start.
POOL_KEYWORDS: dict[str, list[tuple[str, int]]] = {
    "codegen": [
        (r"build", 2),
        (r"implement", 2),
        (r"create", 1),
        (r"fix", 2),
        (r"bugs?", 2),
        (r"deploy", 3),
        (r"endpoints?", 2),
        (r"migrations?", 3),
        (r"front-?end", 3),
        (r"back-?end", 3),
        (r"react", 2),
        (r"next\.?js", 2),
        (r"fastapi", 2),
        (r"api", 1),
        (r"refactor", 2),
        (r"ui", 2),
        (r"components?", 1),
        (r"code", 1),
        (r"integrat\w*", 2),
        (r"remediat\w*", 3),
    ],
    "security": [
        (r"audit\w*", 3),
        (r"vulnerab\w*", 3),
        (r"owasp", 3),
        (r"penetration", 3),
        (r"pentest\w*", 3),
        (r"xss", 3),
        (r"csrf", 3),
        (r"injection", 3),
        (r"security", 2),
        (r"secure", 1),
        (r"compliance", 2),
        (r"review", 1),
        (r"harden\w*", 2),
        (r"threat", 2),
        (r"fraud", 2),
    ],
    "database": [
        (r"schemas?", 3),
        (r"quer(y|ies)", 3),
        (r"subscriptions?", 3),
        (r"backups?", 3),
        (r"migrate", 2),
        (r"data", 1),
        (r"postgres(ql)?", 2),
        (r"supabase", 2),
        (r"database", 1),
        (r"index(es)?", 2),
        (r"tables?", 1),
        (r"sql", 1),
        (r"replication", 3),
    ],
}
_COMPILED = {
    pool: [(re.compile(rf"\b{pat}\b", re.IGNORECASE), weight) for pat, weight in pats]
    for pool, pats in POOL_KEYWORDS.items()
}


def pool_scores(text: str) -> dict[str, int]:
    return {pool: sum(weight for rx, weight in pats if rx.search(text)) for pool, pats in _COMPILED.items()}


def classify_task(description: str, available: list[str] | None = None) -> str:
    """The pool for one task description; codegen when nothing matches (it can do anything)."""
    scores = pool_scores(description)
    if available:
        scores = {pool: score for pool, score in scores.items() if pool in available}
        if not scores:
            return "codegen" if "codegen" in available else available[0]
    best = max(scores.values(), default=0)
    if best == 0:
        return "codegen" if not available or "codegen" in available else available[0]
    # Ties go to the pool listed first: codegen, then security, then database.
    return next(pool for pool in POOL_KEYWORDS if scores.get(pool) == best)


@dataclass(frozen=True)
class Stream:
    """One work stream a request needs: a task template."""

    key: str
    pool: str
    description: str
    estimate_sec: float
    priority: int = 1
    blocked_by: tuple[str, ...] = ()
    soft_deps: tuple[str, ...] = ()


_FULL_STACK = re.compile(
    r"\b(website|web ?site|web app|webapp|platform|saas|full[- ]stack|portal|blog|forum|crm|cms"
    r"|(booking|reservation|ticketing|management|inventory) system|apps?)\b",
    re.I,
)
# Kinds of app a request builds ("Build an expense tracker"); "Add a dashboard page" builds a page.
_APP_KINDS = re.compile(
    r"\b(tracker|shortener|dashboard|planner|manager|(job|message|bulletin|kanban) board|guestbook"
    r"|watchlist|(shopping|grocery|packing|wish|bucket|check|to-?do) ?list)\b",
    re.I,
)
# An app that is not a web app: "a CLI app" is one program.
_NOT_WEB = re.compile(r"\b(cli|command[- ]line|terminal|script|library|package|sdk|plugin)\b", re.I)


def builds_full_stack(request: str) -> bool:
    """Whether a request asks for a whole web project: a website, an app (not a CLI one), a store…
    "the website" is one there already ("Add a dark mode toggle to the website"), unless the
    request is to build it."""
    if sells_online(request):
        return True
    if _NOT_WEB.search(request):
        return False
    if BUILDS.search(request) and _APP_KINDS.search(request):
        return True
    return any(asks_for_new(request, found.start()) for found in _FULL_STACK.finditer(request))


_FRONTEND = re.compile(
    r"\b(front-?end|ui|website|page|pages|react|next\.?js|form|dashboard|landing|toggle|button|dark mode"
    r"|theme|navbar|footer|layout|css|responsive)\b",
    re.I,
)
_BACKEND = re.compile(
    r"\b(back-?end|api|rest|server|endpoints?|booking|payments?|checkout|auth\w*|webhooks?|accounts?"
    r"|log-?ins?|sign-?(up|in)s?|crud)\b",
    re.I,
)
_DATABASE = re.compile(r"\b(database|schema|db|postgres\w*|supabase|sql|tables?|data ?model)\b", re.I)
_SECURITY = re.compile(
    r"\b(secur\w*|audit\w*|payments?|owasp|xss|csrf|vulnerab\w*|pentest|penetration)\b", re.I
)
_FIX = re.compile(r"\b(fix|remediat\w*|patch)\b", re.I)


def _topic(request: str) -> str:
    text = re.sub(r"\s+", " ", request).strip().rstrip(".")
    return text[:160]


def detect_streams(request: str, layers: frozenset[str] = frozenset()) -> list[Stream]:
    """The work streams of a request, as the PM would decompose it (used by the offline planner).
    `layers`: the project's layers (`frontend`, `backend`, `database`) the request must reach, as a
    follow-up that adds a new kind of record reaches every layer the project has."""
    topic = _topic(request)
    full_stack = builds_full_stack(request)
    if STATIC_SITE.search(request) and not (_BACKEND.search(request) or _DATABASE.search(request)):
        full_stack = False  # pages only: "a landing page for a coffee shop"
    wants_security = bool(_SECURITY.search(request))
    wants_fix = bool(_FIX.search(request))

    # "Audit and fix security": find, fix, verify.
    if wants_security and wants_fix and not full_stack:
        return [
            Stream("task_1", "security", f"Audit for vulnerabilities: {topic}", 120),
            Stream(
                "task_2",
                "codegen",
                f"Fix the vulnerabilities found by the audit: {topic}",
                90,
                2,
                ("task_1",),
            ),
            Stream("task_3", "security", f"Verify the fixes with a re-audit: {topic}", 60, 3, ("task_2",)),
        ]

    frontend = full_stack or bool(_FRONTEND.search(request)) or "frontend" in layers
    backend = full_stack or bool(_BACKEND.search(request)) or "backend" in layers
    # An API over records keeps them in tables of its own schema.
    database = (
        full_stack
        or bool(_DATABASE.search(request))
        or "database" in layers
        or (backend and bool(entities(request, placeholder=False)))
    )
    security = full_stack or wants_security

    streams: list[Stream] = []
    if frontend and (backend or database or security):
        streams.append(
            Stream("frontend", "codegen", f"Build Next.js frontend: {topic}", 60, 1, (), ("backend",))
        )
    if backend:
        # A follow-up changing a project's schema: the backend's tests run on the database its
        # migration makes, so the backend waits for it. A new project's backend need not (its API
        # tests wait for a schema to exist).
        grows_schema = "database" in layers and database
        streams.append(
            Stream(
                "backend",
                "codegen",
                f"Build FastAPI backend with API endpoints: {topic}",
                90,
                1,
                ("database",) if grows_schema else (),
                () if grows_schema else ("database",),
            )
        )
    if database and (backend or frontend or full_stack):
        streams.append(Stream("database", "database", f"Design database schema with indexes: {topic}", 45))
    if security and backend:
        streams.append(
            Stream(
                "security",
                "security",
                f"Security audit (OWASP top 10, injection, XSS, CSRF): {topic}",
                120,
                2,
                ("backend",),
            )
        )
    if SHOP_WORDS.search(request) and backend and database:
        streams.append(
            Stream(
                "integration",
                "codegen",
                f"{CHECKOUT_FLOW}: {topic}",
                60,
                2,
                ("backend", "database"),
            )
        )

    if not streams and frontend and not entities(request, placeholder=False):
        # Pages only: a landing page, a portfolio, or a change to the project's pages.
        return [Stream("task_1", "codegen", f"Build Next.js frontend: {topic}", 60)]
    if len(streams) <= 1:
        # A single, specialised job: one agent of the pool the request reads as.
        pool = classify_task(request)
        return [Stream("task_1", pool, topic, {"codegen": 60, "security": 90, "database": 45}[pool])]

    # Renumber as the seed does (task_1, task_2, …), keeping dependencies.
    names = {s.key: f"task_{i}" for i, s in enumerate(streams, start=1)}
    return [
        Stream(
            names[s.key],
            s.pool,
            s.description,
            s.estimate_sec,
            s.priority,
            tuple(names[d] for d in s.blocked_by if d in names),
            tuple(names[d] for d in s.soft_deps if d in names),
        )
        for s in streams
    ]


# A task's share of the project's work, for refunds, when no work stream of the request describes it.
ROLE_WEIGHTS = {"codegen": 75.0, "security": 120.0, "database": 45.0}
DEFAULT_WEIGHT = 60.0


def work_weights(request: str, tasks: list[dict], roles: dict[str, str]) -> dict[str, float]:
    """Each planned task's weight (its share of the work, which refunds follow), fixed by the server:
    the estimate of the work stream of this request with the same description, else its pool
    role's standard weight. A model's own numbers never count: a plan could otherwise make the task
    it lets fail weigh a million times the task that does the work. `roles`: pool name → role.
    The streams are those of the request on its own and reaching every layer, as a follow-up's are."""
    streams = {
        stream.description: stream.estimate_sec
        for stream in detect_streams(request) + detect_streams(request, frozenset(AREAS))
    }
    return {
        t["id"]: streams.get(t["description"]) or ROLE_WEIGHTS.get(roles.get(t["pool"], ""), DEFAULT_WEIGHT)
        for t in tasks
    }
