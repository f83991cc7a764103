"""The contract the deterministic planner gives a plan, derived from the request's words.

Each entity the request names (a booking, a menu, a payment…) is a table with its columns and two
endpoints, `GET /api/<table>` and `POST /api/<table>`; each task owns the folder of its area
(`frontend`, `backend`, `database`, or `src/<task>` for other code). The offline agents build to
the same contract, as a real model given it would.
"""

import copy
import re

ENTITY_WORDS = {
    "menu": "menu_items",
    "menus": "menu_items",
    "booking": "bookings",
    "bookings": "bookings",
    "reservation": "bookings",
    "order": "orders",
    "orders": "orders",
    "payment": "payments",
    "payments": "payments",
    "restaurant": "restaurants",
    "restaurants": "restaurants",
    "review": "reviews",
    "reviews": "reviews",
    "product": "products",
    "products": "products",
    "cart": "carts",
    "contact": "messages",
    "checkout": "orders",
    "customer": "customers",
    "customers": "customers",
    "invoice": "invoices",
    "todo": "todos",
    "todos": "todos",
    "reminder": "reminders",
    "blog": "posts",
    "posts": "posts",
    "article": "posts",
    "comment": "comments",
    "event": "events",
    "ticket": "tickets",
    "appointment": "bookings",
    "member": "members",
    "courses": "courses",
    "notes": "notes",
    "listings": "listings",
    "inventory": "products",
    "books": "books",
    "author": "authors",
    "loan": "loans",
    "student": "students",
    "teacher": "teachers",
    "patient": "patients",
    "doctor": "doctors",
    "employee": "employees",
    "recipe": "recipes",
    "photo": "photos",
    "song": "songs",
    "playlist": "playlists",
    "room": "rooms",
    "message": "messages",
    "task": "tasks",
    "job": "jobs",
    "expense": "expenses",
    "classes": "classes",
    "donation": "donations",
    "volunteer": "volunteers",
    "property": "properties",
    "properties": "properties",
    # What an app of its kind keeps: a chat its messages, a poll its votes, a kanban board its cards.
    "chat": "messages",
    "guestbook": "messages",
    "poll": "polls",
    "vote": "votes",
    "flashcard": "flashcards",
    "kanban": "cards",
    "movie": "movies",
    "film": "movies",
    "leads": "leads",
    "categories": "categories",
    "tenant": "tenants",
    "vehicle": "vehicles",
    "crm": "leads",
    "deals": "deals",
    "forum": "threads",
    "threads": "threads",
    "reply": "replies",
    "replies": "replies",
    "pet": "pets",
    "gym": "classes",
    "estate": "listings",  # real estate
    "budgets": "budgets",
    "transactions": "transactions",
    "lend": "loans",
    "lending": "loans",
    "borrow": "loans",
    "grade": "grades",
    "quiz": "questions",
    "question": "questions",
    "newsletter": "subscribers",
    "subscriber": "subscribers",
}
# A request to sell online: its project has products, carts, orders and payments whether or not it
# names them ("an e-commerce store for handmade jewelry").
SHOP_WORDS = re.compile(
    r"\b(e-?commerce|webshop|bookstore|storefront|marketplace|checkout|shopping(?!\s+lists?\b)"
    # a store or shop as a noun that sells: not "store the data", nor "a key-value store"
    r"|(a|an|the|my|our|your|online|web)\s+((?!(data|key|object|document|session|state|config|secret"
    r"|blob|vector|event|feature|file|token|cache|cookie|credential|in-memory|memory|work)\b)[\w-]+\s+)?"
    r"(store|shop))\b",
    re.I,
)
SHOP_TABLES = ("products", "carts", "orders", "payments")
# A site of pages only: a shop's landing page is no shop.
STATIC_SITE = re.compile(r"\b(landing page|static (web ?)?site|portfolio|brochure|one-page)\b", re.I)
# "the shop", "my app": one there already ("Add a dark mode toggle to the shop"), unless the
# request is to build it.
EXISTING = re.compile(r"\b(the|this|our|my|your|its)\s+([\w-]+\s+)?$", re.I)
BUILDS = re.compile(r"^\W*(please\s+)?(build|create|develop|design|write|launch|set ?up)\b", re.I)


def asks_for_new(text: str, noun_at: int) -> bool:
    """Whether the thing named at `noun_at` ("website", "shop") is one the request asks to build,
    not one there already ("Add a dark mode toggle to the shop")."""
    return bool(BUILDS.search(text)) or not EXISTING.search(text[:noun_at])


def sells_online(text: str) -> bool:
    """Whether a request asks for a shop of its own (not a landing page, nor a change to the shop
    there is)."""
    if STATIC_SITE.search(text):
        return False
    return any(
        found.group(0).lower() != "checkout"
        and asks_for_new(text, found.end() - len(found.group(0).split()[-1]))
        for found in SHOP_WORDS.finditer(text)
    )


USERS = {
    "id": "SERIAL PRIMARY KEY",
    "email": "TEXT NOT NULL UNIQUE",
    "created_at": "TIMESTAMPTZ NOT NULL DEFAULT now()",
}
# A request whose users sign up and log in: each record is then its user's own. Not "accounting",
# nor a register for an event, nor a newsletter's sign-up (an email kept, no account).
ACCOUNTS = re.compile(
    r"\b((?<!newsletter )(?<!mailing list )sign(?:s|ing)?[ -]?(?:up|in)"
    r"|log(?:s|ging)?[ -]?in|logins?|user accounts?|authenticat\w*"
    r"|(?:an|their|own|your|my|create|with)\s+accounts?|passwords?)\b",
    re.I,
)
PASSWORD_HASH = "password_hash"
# Who signed in: a token's SHA-256 (the token itself is only ever the client's), and whose it is.
AUTH_TOKENS = {
    "token_hash": "TEXT PRIMARY KEY",
    "user_id": "INTEGER NOT NULL REFERENCES users(id)",
    "created_at": "TIMESTAMPTZ NOT NULL DEFAULT now()",
}
# Failed log-ins by email, recent ones counted to slow down guessing a password.
LOGIN_FAILURES = {
    "id": "SERIAL PRIMARY KEY",
    "email": "TEXT NOT NULL",
    "created_at": "TIMESTAMPTZ NOT NULL DEFAULT now()",
}
# The tables of accounts themselves: no page or record endpoints of their own.
ACCOUNT_TABLES = ("users", "auth_tokens", "login_failures")
CREDENTIALS = {"email": "string", "password": "string"}
ACCOUNT_ENDPOINTS = (
    {"method": "POST", "path": "/api/signup", "request": CREDENTIALS, "response": {"token": "string"}},
    {"method": "POST", "path": "/api/login", "request": CREDENTIALS, "response": {"token": "string"}},
    {"method": "GET", "path": "/api/me", "request": {}, "response": {"id": "integer", "email": "string"}},
    {"method": "POST", "path": "/api/logout", "request": {}, "response": {"logged_out": "boolean"}},
)


PAYMENT_PROCESSING = "payment processing: payments are records, no card is charged"
# What a request may ask for that neither the deterministic planner nor the offline agents derive
# anything for: the offline answer names it rather than calling the project complete without it.
NOT_DERIVED = (
    (r"\bshar(?:e|es|ed|ing)\b", "sharing records with other users"),
    (
        r"\b(?:notif\w*|e-?mail (?:alerts?|reminders?|confirmations?)|reminder e-?mails?|sms"
        r"|text messages?)\b",
        "notifications (email or SMS)",
    ),
    (r"\b(?:uploads?|uploading|attachments?)\b", "file uploads"),
    (r"\b(?:real-?time|live (?:chat|updates?)|chat)\b", "real-time updates and chat"),
    (r"\b(?:payments?|stripe|paypal|checkout)\b", PAYMENT_PROCESSING),
    (
        r"\b(?:google|github|facebook|apple|oauth2?|sso|single sign-on)\b",
        "sign-in with another provider: accounts are by email and password",
    ),
    (r"\b(?:admins?|roles?|permissions?|moderat\w*)\b", "admin roles and permissions"),
    (r"\b(?:exports?|exporting|pdfs?|csv)\b", "exports"),
)


def not_derived(request: str) -> list[str]:
    """What the request asks for that the offline agents build nothing for (`NOT_DERIVED`); a shop
    takes payments whether or not it says so."""
    found = [label for pattern, label in NOT_DERIVED if re.search(pattern, request, re.I)]
    if PAYMENT_PROCESSING not in found and sells_online(request):
        found.append(PAYMENT_PROCESSING)
    return found


# People who may be the ones with accounts ("members log in"), else a record others keep.
PEOPLE = {
    "members", "students", "patients", "customers", "volunteers", "employees", "teachers", "doctors",
    "tenants",
}  # fmt: skip


def signing_in(request: str) -> set[str]:
    """The people a request says sign up or log in ("where students log in", "customers can sign
    up"): its users, whose table is `users`; with accounts, members are always the users ("Add user
    login so that members post threads")."""
    lower = request.lower()
    said = {
        table
        for found in ACCOUNTS.finditer(lower)
        for word in re.findall(r"[a-z]+", lower[: found.start()])[-3:]
        if (table := known_table(word)) in PEOPLE
    }
    return said | {"members"} if ACCOUNTS.search(lower) else set()


def wants_accounts(request: str) -> bool:
    """Whether a request asks for users who sign up and log in."""
    return bool(ACCOUNTS.search(request))


def adds_accounts(request: str, stored: dict | None) -> bool:
    """Whether a follow-up asks for accounts on a project that has none ("Add a login page")."""
    return wants_accounts(request) and not has_accounts(stored)


def has_accounts(contract: dict | None) -> bool:
    """Whether a contract's project has accounts: its users have a password."""
    return any(
        t["name"] == "users" and PASSWORD_HASH in t["columns"] for t in (contract or {}).get("tables", [])
    )


COMMON = {
    "id": "SERIAL PRIMARY KEY",
    "user_id": "INTEGER NOT NULL REFERENCES users(id)",
    "name": "TEXT NOT NULL",
}
# A yes-or-no column (a todo's `done`): false unless said otherwise.
FLAG = "BOOLEAN NOT NULL DEFAULT false"
EXTRA_COLUMNS = {
    "bookings": {"party_size": "INTEGER NOT NULL", "starts_at": "TIMESTAMPTZ NOT NULL"},
    "menu_items": {"price_cents": "INTEGER NOT NULL"},
    "orders": {"total_cents": "INTEGER NOT NULL", "status": "TEXT NOT NULL"},
    "payments": {"amount_cents": "INTEGER NOT NULL", "status": "TEXT NOT NULL"},
    "products": {"price_cents": "INTEGER NOT NULL"},
    "reviews": {"rating": "INTEGER NOT NULL"},
    "messages": {"body": "TEXT NOT NULL"},
    "invoices": {"total_cents": "INTEGER NOT NULL"},
    "todos": {"due_at": "TIMESTAMPTZ", "done": FLAG},  # a todo may have no due date
    "reminders": {"remind_at": "TIMESTAMPTZ NOT NULL"},
    "posts": {"body": "TEXT NOT NULL"},
    "comments": {"body": "TEXT NOT NULL"},
    "events": {"starts_at": "TIMESTAMPTZ NOT NULL", "capacity": "INTEGER NOT NULL"},
    "tickets": {"price_cents": "INTEGER NOT NULL"},
    "members": {"email": "TEXT NOT NULL"},
    "courses": {"price_cents": "INTEGER NOT NULL"},
    "notes": {"body": "TEXT NOT NULL"},
    "listings": {"price_cents": "INTEGER NOT NULL"},
    "links": {"url": "TEXT NOT NULL"},
    "photos": {"url": "TEXT NOT NULL"},
    "expenses": {"amount_cents": "INTEGER NOT NULL"},
    "sales": {"amount_cents": "INTEGER NOT NULL"},
    "tasks": {"due_at": "TIMESTAMPTZ", "done": FLAG},
    "list_items": {"done": FLAG},
    "workouts": {"minutes": "INTEGER NOT NULL"},
    "cards": {"stage": "TEXT NOT NULL"},  # a kanban board's column: "To do", "Doing", "Done"
    "flashcards": {"answer": "TEXT NOT NULL"},
    "deals": {"amount_cents": "INTEGER NOT NULL"},
    "threads": {"body": "TEXT NOT NULL"},
    "replies": {"body": "TEXT NOT NULL"},
    "pets": {"species": "TEXT"},
    "classes": {"starts_at": "TIMESTAMPTZ NOT NULL", "capacity": "INTEGER NOT NULL"},
    "budgets": {"amount_cents": "INTEGER NOT NULL"},
    "transactions": {"amount_cents": "INTEGER NOT NULL"},
    "loans": {"due_at": "TIMESTAMPTZ", "returned": FLAG},
    "grades": {"score": "INTEGER NOT NULL"},
    "books": {"author": "TEXT"},
    "books_to_read": {"author": "TEXT", "finished": FLAG},
    "support_tickets": {"body": "TEXT NOT NULL", "resolved": FLAG},
    "questions": {"answer": "TEXT NOT NULL"},
    "applications": {"email": "TEXT NOT NULL"},  # the name is the applicant's
    "subscribers": {"email": "TEXT NOT NULL"},
}
CREATED_AT = {"created_at": "TIMESTAMPTZ NOT NULL DEFAULT now()"}
# Records everyone sees, in a project with accounts too: a shop's products, a blog's posts. A user
# adds, changes and deletes their own; any other record a user keeps to themselves.
PUBLIC_RECORDS = {
    "products", "menu_items", "restaurants", "events", "courses", "listings", "posts", "comments",
    "reviews", "books", "authors", "recipes", "photos", "songs", "properties", "classes", "jobs",
    "threads", "replies", "pets",
}  # fmt: skip
# Records kept for the books: no PATCH or DELETE, even of one's own (a refund or a credit note is a
# new record).
KEPT_RECORDS = {"payments", "invoices", "orders", "donations", "sales"}
# Records that, without accounts, are one list kept together by whoever reaches the app (a
# household's todos, a team's notes): anyone changes and deletes them. Any other record (a booking, a
# review, a placeholder's items on a bakery's site) is changed by no one until the project has
# accounts.
SHARED_LISTS = {
    "todos", "tasks", "notes", "reminders", "links", "bookmarks", "ideas", "goals", "habits", "expenses",
    "workouts", "time_entries", "cards", "flashcards", "list_items", "budgets", "projects",
    "support_tickets", "books_to_read",
}  # fmt: skip
GENERATED = {"id", "user_id", "created_at"}
AREAS = ("frontend", "backend", "database")
# The description of the work stream that joins a shop's parts: its agents build the checkout flow.
CHECKOUT_FLOW = "Integrate checkout and payments end to end"
# The records a checkout creates, in the order it creates them.
CHECKOUT_STEPS = ("carts", "orders", "payments")


# Records a request names by what its users do with them ("users create rooms and send messages")
# or by what its app keeps of them ("an expense tracker", "a URL shortener", "sales analytics").
ACTED_ON = re.compile(
    r"\b(?:create|add|post|send|track|manage|share|upload|save|organi[sz]e|log|record|rate|browse"
    r"|book|follow|bookmark|schedule|collect|sell|buy|publish|submit|invite)s?"
    r"\s+(?:(?:their|your|my|our|own|new|and)\s+)*([a-z]{3,}s)\b"
)
KEPT_BY = re.compile(
    r"\b([a-z]{3,})\s+(?:tracker|shortener|manager|planner|journal|log|logger|diary|organi[sz]er"
    r"|scheduler|catalog(?:ue)?|directory|board|statistics|stats|analytics|history|counter)s?\b"
    r"(?!\s+in\b)"  # "writers log in" keeps no log of writers
)
# "a shopping list", "a packing checklist": the items of a list kept together, ticked when done.
LIST_OF_ITEMS = re.compile(r"\b(?:shopping|grocery|packing|wish|bucket|check)\s*lists?\b")
# "guests book tables": a restaurant's bookings (a table is no record of its own).
BOOKS_A_TABLE = re.compile(r"\b(?:book|reserve)s?\s+(?:a\s+)?tables?\b")
# Kinds of app whose records are named by the kind: a reading list keeps books to read (one's own,
# not a library's books everyone sees), a helpdesk its support tickets (not an event's tickets,
# which have a price), a project tool its projects, a job board its applications.
APP_RECORDS = (
    (re.compile(r"\breading\s*lists?\b"), "books_to_read"),
    (re.compile(r"\b(?:help\s*desk|support\s+(?:desk|tickets?|ticketing|requests?))\b"), "support_tickets"),
    (re.compile(r"\bproject\s+(?:management|manager|tracker|planner|board)s?\b"), "projects"),
    (
        re.compile(r"\b(?:job\s*boards?|apply\s+(?:for|to)\s+(?:a\s+|the\s+)?jobs?|candidates?\s+apply)\b"),
        "applications",
    ),
)
NAMED_AS = {
    "url": "links", "link": "links", "time": "time_entries", "fitness": "workouts", "sale": "sales",
    "finance": "expenses", "money": "expenses", "spending": "expenses",
}  # fmt: skip
# Words in those places that name no record, or that SQL keeps for itself.
NOT_RECORDS = {
    "users", "user", "accounts", "things", "stuff", "data", "media", "content", "contents", "details",
    "changes", "updates", "requests", "this", "its", "personal", "simple", "basic", "small", "online",
    "mobile", "social", "project", "projects", "values", "rows", "groups", "others", "columns",
    "tables", "indexes", "keys", "views", "items", "records", "entries", "fields", "pages", "forms",
    "apps", "sites", "websites", "tests", "files", "features", "thes", "alls", "webs", "reals",
    "ands", "fors", "withs", "yours", "ours", "theirs", "thats", "anys", "eachs", "everys", "news",
}  # fmt: skip
# A request's own record names beyond the known words: at most this many, whatever its length.
MAX_NAMED = 6


def _plural(word: str) -> str:
    if word.endswith("s"):
        return word  # "sales", "analytics"
    if word.endswith(("x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def named_records(text: str) -> list[tuple[int, str]]:
    """(position, table) of the records a request names by what is done with them or kept of them,
    beyond ENTITY_WORDS."""
    lower = text.lower()
    found = [(m.start(1), m.group(1)) for m in ACTED_ON.finditer(lower)]
    found += [(m.start(), "bookings") for m in BOOKS_A_TABLE.finditer(lower)]
    found += [(m.start(), "list_items") for m in LIST_OF_ITEMS.finditer(lower)]
    found += [(m.start(1), NAMED_AS.get(m.group(1), _plural(m.group(1)))) for m in KEPT_BY.finditer(lower)]
    named = [
        (at, known_table(table) or table)  # "book appointments" are the bookings
        for at, table in found
        if table not in NOT_RECORDS
        and _plural(lower[at:].split(None, 1)[0]) not in NOT_RECORDS  # "the logs" names no "thes"
        and re.fullmatch(r"[a-z][a-z_]{2,29}", table)
    ]
    # Named by the app's kind, "projects" too (a word that otherwise means the client's own project).
    # After the words it ends with: a job board's jobs come before its applications.
    return named + [(m.end(), table) for pattern, table in APP_RECORDS for m in pattern.finditer(lower)]


def known_table(word: str) -> str | None:
    """The table an entity word names, in the singular or the plural."""
    return ENTITY_WORDS.get(word) or (ENTITY_WORDS.get(word[:-1]) if word.endswith("s") else None)


def entities(text: str, placeholder: bool = True) -> list[str]:
    """The tables a text names, in order of first mention: its entity words, the records its users
    act on or its app keeps (`named_records`, at most MAX_NAMED), then a shop's own tables when it
    asks to sell online; when it names none, `items` as a placeholder (`placeholder`), else none."""
    mentions = []
    for word in re.finditer(r"[a-z]+", text.lower()):
        table = known_table(word.group(0))
        if table:
            mentions.append((word.start(), table, True))
    mentions += [(at, table, False) for at, table in named_records(text)]
    found: list[str] = []
    named = 0
    for _, table, known in sorted(mentions):
        if table in found or (not known and named >= MAX_NAMED):
            continue
        found.append(table)
        named += not known
    if "support_tickets" in found and "tickets" in found:
        found.remove("tickets")  # a helpdesk's tickets, not an event's
    for table in signing_in(text):
        if table in found:
            found.remove(table)  # "students sign up": the students are the users, no table of their own
    if sells_online(text):
        found += [table for table in SHOP_TABLES if table not in found]
    return found or (["items"] if placeholder else [])


# "Add a phone number field to bookings", "Add phone and email to the booking form": fields of a
# record the request names, the record last (a form, a page or a table of it may follow).
ADDS_FIELDS = re.compile(
    r"^\W*(?:please\s+)?(?:also\s+)?(?:add|store|record|keep|collect|ask\s+for)\s+"
    r"(?P<fields>[a-z][a-z ,'-]{0,100}?)\s+(?:to|on|in|for|with)\s+"
    r"(?:(?:the|each|every|all|our|my|a)\s+)?(?P<record>[a-z]+(?:\s+[a-z]+){0,3}?)"
    r"(?:\s+(?:forms?|pages?|tables?|records?|lists?|model|endpoints?|api))?\s*[.!]?\s*$",
    re.I,
)
FIELD_NOUNS = re.compile(r"\s+(?:fields?|columns?|inputs?|attributes?|properties|boxe?s?)$")
# "a done checkbox", "an urgent flag": a yes-or-no field, false for the rows there already.
FLAG_NOUNS = re.compile(r"\s+(?:(?:check|tick) ?box(?:es)?|flags?|toggles?|switch(?:es)?)$")
# A field's usual name, where people say it in more words than a column has.
FIELD_NAMES = {
    "phone number": "phone",
    "telephone number": "phone",
    "telephone": "phone",
    "mobile number": "phone",
    "e-mail": "email",
    "e-mail address": "email",
    "email address": "email",
    "note": "notes",
    "notes": "notes",
    "date of birth": "birth_date",
    "birthday": "birth_date",
    "web site": "website",
    "special request": "special_requests",
}
# Kinds by the field's last word: counted, priced (kept in cents) or a moment; anything else is text.
COUNTED = {
    "count", "quantity", "size", "age", "minutes", "hours", "days", "rating", "stars", "score",
    "capacity", "guests", "seats", "people", "year", "floor", "number",
}  # fmt: skip
PRICED = {"price", "cost", "amount", "total", "fee", "deposit", "tip", "budget", "salary"}
MOMENTS = {"date", "time", "deadline"}
# Names SQL keeps for itself or the generated code uses: no field of these names.
NOT_FIELDS = GENERATED | {
    "order", "group", "select", "from", "where", "table", "index", "key", "default", "check",
    "primary", "references", "limit", "offset", "values", "column", "constraint", "user", "to", "by",
    "and", "or", "not", "null", "all", "as", "in", "is", "on", "case", "when", "end", "desc", "asc",
}  # fmt: skip
MAX_FIELDS = 6


def record_named(phrase: str, tables=()) -> str | None:
    """The table a record's name in a request means: one of the project's `tables` in the singular
    or the plural ("application", "books to read", "menu items") or, the only one ending so, by its
    last words (a helpdesk's "ticket" is its support_tickets, a grocery list's "items" its
    list_items); else a known word's."""
    joined = "_".join(phrase.lower().split())
    for table in tables:
        if table in (joined, _plural(joined)):
            return table
    ending = [table for table in tables if table.endswith("_" + _plural(joined))]
    if len(ending) == 1:
        return ending[0]
    return None if "_" in joined else known_table(joined)


def added_fields(request: str, tables=()) -> tuple[str, dict[str, str]] | None:
    """A request to add fields to one kind of record: (the record's table, {column: SQL type}), each
    column nullable (the rows there already have none), but a yes-or-no one, false for them. None
    when the request is not one, or a field it names is a kind of record itself ("Add reviews to
    restaurants"). The record is named as one of the project's `tables` or by a known word
    (`record_named`)."""
    found = ADDS_FIELDS.match(request.strip())
    if found is None:
        return None
    table = record_named(found.group("record"), tables)
    if table is None:
        return None
    phrase = found.group("fields").lower().strip()
    # "a message field": a field whatever its name
    said_fields = bool(FIELD_NOUNS.search(phrase) or FLAG_NOUNS.search(phrase))
    if not FLAG_NOUNS.search(phrase):
        phrase = FIELD_NOUNS.sub("", phrase)
    fields: dict[str, str] = {}
    for part in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", phrase):
        words = re.sub(r"^(?:an?|the|their|its|new|optional)\s+", "", part.strip()).strip()
        flag = bool(FLAG_NOUNS.search(words))
        words = FIELD_NOUNS.sub("", FLAG_NOUNS.sub("", words))
        if not words:
            continue
        words = re.sub(r"'s\b", "", words)
        # Its last word says what it is: "a photo url" is a field, "reviews" a kind of record.
        if not said_fields and words not in FIELD_NAMES and known_table(words.split()[-1]):
            return None  # a record, not a field
        name = FIELD_NAMES.get(words) or "_".join(re.findall(r"[a-z0-9]+", words)[:3])
        last = name.rsplit("_", 1)[-1]
        if last in PRICED and not name.endswith("_cents"):
            name += "_cents"
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name) or name in NOT_FIELDS:
            return None
        kind = "TEXT"
        if flag:
            kind = FLAG
        elif last in COUNTED or last in PRICED:
            kind = "INTEGER"
        elif last in MOMENTS or name.endswith("_at"):
            kind = "TIMESTAMPTZ"
        fields[name] = kind
    if not fields or len(fields) > MAX_FIELDS:
        return None
    return table, fields


def table_columns(table: str, accounts: bool = False) -> dict[str, str]:
    if table == "users":
        if not accounts:
            return dict(USERS)
        columns = {column: kind for column, kind in USERS.items() if column not in CREATED_AT}
        return {**columns, PASSWORD_HASH: "TEXT NOT NULL", **CREATED_AT}  # created_at last, as elsewhere
    if table == "auth_tokens":
        return dict(AUTH_TOKENS)
    if table == "login_failures":
        return dict(LOGIN_FAILURES)
    return {**COMMON, **EXTRA_COLUMNS.get(table, {}), **CREATED_AT}


def sql_type(kind: str) -> str:
    """The JSON type of a column's SQL type, for an endpoint's request and response shapes."""
    upper = kind.upper()
    if "BOOL" in upper:
        return "boolean"
    if "INT" in upper or "SERIAL" in upper:
        return "integer"
    if "TIMESTAMP" in upper or "DATE" in upper:
        return "string (ISO 8601)"
    return "string"


# The words of a request for something a user fills in or looks at.
PAGE_WORDS = re.compile(r"\b(forms?|pages?|site|website|dashboard|landing)\b", re.I)


def small_app(request: str, areas: dict[str, str], follow_up: bool = False) -> bool:
    """Whether one agent builds a small app whole, its page, API and table: a new project's single
    task asking for a page or form over records ("Build a contact form")."""
    return (
        not follow_up
        and len(areas) == 1
        and set(areas.values()) <= {"frontend", "other"}
        and bool(PAGE_WORDS.search(request))
        and bool(entities(request, placeholder=False))
    )


def contract_for(
    request: str, areas: dict[str, str], follow_up: bool = False, stored: dict | None = None
) -> dict:
    """The contract of a plan whose tasks have these areas (task id → frontend, backend, database,
    security or other): per table, GET and POST `/api/<table>` and, in a project with accounts where a
    record is its user's own, PATCH (any of its fields) and DELETE `/api/<table>/{id}` unless it is kept
    for the books (`KEPT_RECORDS`); without accounts, only on a list everyone keeps together
    (`SHARED_LISTS`). A new project whose request names no entity gets an `items` placeholder to build to,
    unless it is pages alone; a follow-up (`follow_up`) builds on the project's contract and adds none: an
    endpoint its plan declares is one its tasks must serve. A small app's one task builds every layer. A
    table the project's contract (`stored`) has keeps its columns, and a request to add fields to one
    (`added_fields`) declares it with them. A project with accounts (`wants_accounts`) has their endpoints
    and tables too (`ACCOUNT_ENDPOINTS`, `ACCOUNT_TABLES`)."""
    present = set(AREAS) if small_app(request, areas, follow_up) else set(areas.values())
    adding = added_fields(request, [t["name"] for t in (stored or {}).get("tables", [])])
    # Pages alone keep no records: a landing page calls no API.
    tables = entities(request, placeholder=not follow_up and bool(present & {"backend", "database"}))
    if adding:
        tables = [adding[0]]  # "Add a notes column to orders" is about orders alone
    known = {t["name"]: dict(t["columns"]) for t in (stored or {}).get("tables", [])}
    # Accounts are a new project's when it asks for them, and a follow-up's when its project has them
    # or it asks for them; a follow-up adding them reaches every record the project has.
    accounts = wants_accounts(request) or (follow_up and has_accounts(stored))
    if follow_up and adds_accounts(request, stored):
        tables += [table for table in known if table not in tables]
    tables = [table for table in tables if table not in ACCOUNT_TABLES]
    columns = {table: known.get(table) or table_columns(table) for table in tables}
    if accounts and "users" in known and PASSWORD_HASH not in known["users"]:
        # The users there have no password: the column is nullable, and they cannot log in.
        known["users"][PASSWORD_HASH] = "TEXT"
    if adding:
        table, fields = adding
        there = {column.lower() for column in columns[table]}
        columns[table] |= {name: kind for name, kind in fields.items() if name not in there}
    contract: dict = {"endpoints": [], "tables": [], "ownership": {}}
    if present & {"frontend", "backend"}:
        if accounts:
            contract["endpoints"] += copy.deepcopy(list(ACCOUNT_ENDPOINTS))
        for table in tables:
            fields = {c: sql_type(k) for c, k in columns[table].items() if c not in GENERATED}
            contract["endpoints"] += [
                {
                    "method": "GET",
                    "path": f"/api/{table}",
                    "request": {},
                    "response": {"items": f"array of {table}"},
                },
                {"method": "POST", "path": f"/api/{table}", "request": fields, "response": {"id": "integer"}},
            ]
            if table not in KEPT_RECORDS and (accounts or table in SHARED_LISTS):
                one = f"/api/{table}/{{id}}"
                contract["endpoints"] += [
                    {"method": "PATCH", "path": one, "request": fields, "response": {"updated": "integer"}},
                    {"method": "DELETE", "path": one, "request": {}, "response": {"deleted": "integer"}},
                ]
    if present & {"database", "backend"} and tables:
        contract["tables"] = [
            {"name": t, "columns": columns.get(t) or known.get(t) or table_columns(t, accounts)}
            for t in ["users", *tables, *(ACCOUNT_TABLES[1:] if accounts else [])]
        ]
    if len(areas) > 1:
        taken: set[str] = set()
        for task_id, area in areas.items():
            if area == "security":
                continue  # an audit may hand back fixed files of the code it read
            folder = area if area in AREAS and area not in taken else f"src/{task_id}"
            taken.add(folder)
            contract["ownership"][task_id] = [folder]
    return contract


# The words that name a part of the project. The first one in a description wins: a task's own
# words come before what it quotes ("Build FastAPI backend: REST API + frontend" builds the backend).
AREA_WORDS = re.compile(r"(frontend|next|\bui\b)|(backend|fastapi|\bapi\b)")


def area_of(description: str, role: str) -> str:
    """The part of the project a task builds, from its pool's role and its description's words."""
    if role in ("database", "security"):
        return role
    found = AREA_WORDS.search(description.lower())
    if found is None:
        return "other"
    return "frontend" if found.group(1) else "backend"
