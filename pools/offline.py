"""The offline provider: deterministic, no network, the default so everything runs with no API key.

Its plans come from the deterministic planner; its code, audits and schemas from templates
driven by the request and task. Latency and failures can be simulated per profile through
`options`, for demos, tests and benchmarks:

    {"latency_sec": 1.0,                       # default for every call (else the pool's offline_latency_sec)
     "latency_rules": [{"match": "backend", "latency_sec": 9}],   # by task description substring
     "fail_rules": [{"match": "backend", "attempts": [1], "error": "malformed|broken_code|error|fatal"}],
     "flaws": ["sql_injection", "missing_fk_index"],               # first drafts carry these flaws
     "remediation_fails": 1,                                       # remediation rounds up to 1 fix nothing
     "plan": {"tasks": [...]},                 # the PM answers with this plan (benchmarks: fixed DAGs)
     "tools": true}                            # agents work in the tool loop (false: one JSON reply)

With tools, an offline agent works as a real one would, deterministically: it writes its files and,
for code, a test of them, runs the test in the sandbox, and finishes; a security agent lists the
files it audits first. The flaw "failing_test" makes the first test fail so that the next turn fixes
it. A call's simulated latency is spread over the turns, so a task takes as long with tools as without.

What they write is a project that runs: a FastAPI backend over SQLite with its validation tests, a
PostgreSQL schema, Next.js pages calling the contract's endpoints, and for a shop's checkout stream
a flow through those endpoints whose end-to-end test runs the backend on the schema.

"broken_code" answers with valid JSON whose Python file does not compile (verification fails it).
"""

import ast
import json
import pprint
import re
import shlex
import textwrap
import time

from .contracts.contract import PARAM, owns, paths_match, segments
from .contracts.derive import (
    ACCOUNT_TABLES,
    CHECKOUT_FLOW,
    CHECKOUT_STEPS,
    GENERATED,
    PASSWORD_HASH,
    PUBLIC_RECORDS,
    added_fields,
    area_of,
    entities,
    has_accounts,
    not_derived,
    sql_type,
    table_columns,
    wants_accounts,
)
from .contracts.sql_schema import read_schema
from .llm_types import Completion, LLMError, LLMRequest, LLMTimeout, ModelSpec, ProgressCallback, ToolCall
from .offline_accounts import FRONTEND_ACCOUNT, FRONTEND_SIGNED_IN, SIGNED_IN_CLIENT, backend_accounts_files

STEP_SEC = 0.05


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def latency_for(spec: ModelSpec, request: LLMRequest) -> float:
    """Simulated seconds for this call (also used by the scheduler's estimates)."""
    description = request.meta.get("description", "").lower()
    for rule in spec.options.get("latency_rules", []):
        if rule.get("match", "").lower() in description and (
            not rule.get("pool") or rule["pool"] == request.pool
        ):
            return float(rule["latency_sec"])
    if request.purpose != "agent":
        return float(spec.options.get("pm_latency_sec", 0.0))
    if "latency_sec" in spec.options:
        return float(spec.options["latency_sec"])
    return float(request.meta.get("pool_latency_sec", 1.0))


class OfflineProvider:
    def complete(
        self, spec: ModelSpec, request: LLMRequest, on_progress: ProgressCallback | None
    ) -> Completion:
        looping = bool(request.tools) and spec.options.get("tools", True) is not False
        latency = latency_for(spec, request)
        if looping:
            latency /= planned_turns(spec, request)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < latency:
            if elapsed >= request.timeout:
                raise LLMTimeout(f"no reply within {request.timeout:.1f}s")
            if on_progress:
                on_progress(min(0.99, elapsed / latency))
            time.sleep(min(STEP_SEC, latency - elapsed, max(0.0, request.timeout - elapsed)))
        if latency > request.timeout:
            raise LLMTimeout(f"no reply within {request.timeout:.1f}s")
        text = self._answer(spec, request)
        calls: tuple[ToolCall, ...] = ()
        if looping:
            text, calls = next_step(spec, request, text)
        return Completion(
            text=text,
            input_tokens=max(1, request.conversation_chars() // 4),
            output_tokens=_tokens(text + "".join(c.raw for c in calls)),
            model=spec.model,
            provider="offline",
            tool_calls=calls,
        )

    def _answer(self, spec: ModelSpec, request: LLMRequest) -> str:
        meta = request.meta
        attempt = meta.get("attempt", 1)
        for rule in spec.options.get("fail_rules", []):
            if rule.get("match", "").lower() in meta.get("description", "").lower() and (
                not rule.get("attempts") or attempt in rule["attempts"]
            ):
                kind = rule.get("error", "error")
                if kind == "malformed":
                    return "Sure! Here is the code you asked for: {not json"
                if kind == "broken_code":
                    return json.dumps(
                        {
                            "summary": "Draft.",
                            "findings": [],
                            "files": [
                                {"path": "src/draft.py", "content": "def handler(request)\n    return None\n"}
                            ],
                        }
                    )
                raise LLMError(f"simulated provider failure ({kind})", retryable=kind != "fatal")
        if request.purpose == "plan":
            if "plan" in spec.options:
                return json.dumps(spec.options["plan"])
            return self._plan(meta)
        if request.purpose == "synthesis":
            # The aggregator's own summary of the facts, and what the offline agents did not build.
            missing = not_derived(meta.get("request", ""))
            if not missing:
                return meta.get("plain_summary", "")
            said = "; ".join(missing)
            return (
                f"{meta.get('plain_summary', '')}\n\n**Not built offline:** {said}. The offline agents "
                "build records, fields, pages and accounts; a model agent writes the rest."
            )
        flaws = set(spec.options.get("flaws", [])) if meta.get("kind", "plan") == "plan" else set()
        if meta.get("kind") == "remediation" and meta.get("round", 0) <= spec.options.get(
            "remediation_fails", 0
        ):
            return json.dumps(
                {
                    "summary": "Reviewed the flagged code; no change made.",
                    "files": meta.get("target_files", []),
                    "findings": [],
                }
            )
        if meta.get("kind") == "remediation" and any(
            has_conflict_markers(f.get("content", "")) for f in meta.get("target_files", [])
        ):
            return json.dumps(resolve_merge(meta))
        if request.role == "security":
            return json.dumps(audit(meta, flaws))
        if request.role == "database":
            return json.dumps(schema(meta, flaws))
        reply = codegen(meta, flaws)
        if meta.get("project_files") is not None:
            # A single reply, shown the project's files: its new components mounted as in the loop.
            reply["files"] = mounted(reply["files"], meta["project_files"])
        return json.dumps(reply)

    @staticmethod
    def _plan(meta: dict) -> str:
        """The planner's own deterministic plan, which it hands over as the offline PM's answer."""
        plan = {"tasks": meta.get("fallback_plan", []), "contract": meta.get("fallback_contract") or {}}
        return "```json\n" + json.dumps(plan, indent=2) + "\n```"

    def expected_latency(self, spec: ModelSpec, request: LLMRequest) -> float | None:
        return latency_for(spec, request)

    def warm(self, spec: ModelSpec) -> None:
        """Nothing to load: the offline provider is plain Python, imported with this module."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# The conflict kinds whose fix regenerates its task's files as planned, without the flaws.
TREE_FIXES = ("interface", "ownership", "integration")


def contract_tables(meta: dict) -> dict[str, dict[str, str]]:
    """The records to build: the contract's tables (without those of accounts, which are no
    records), else the request's entities with the derived columns."""
    declared = {t["name"]: t["columns"] for t in (meta.get("contract") or {}).get("tables", [])}
    if declared:
        return {name: columns for name, columns in declared.items() if name not in ACCOUNT_TABLES}
    text = meta.get("request", "") + " " + meta.get("description", "")
    return {table: table_columns(table) for table in entities(text)}


def contract_endpoints(meta: dict, tables: list[str]) -> list[dict]:
    endpoints = (meta.get("contract") or {}).get("endpoints", [])
    if endpoints:
        return endpoints
    return [{"method": m, "path": f"/api/{t}"} for t in tables for m in ("GET", "POST")]


ROOT_CONFTEST = '''"""Puts this folder on the import path of the tests below it (a rootdir conftest)."""
'''


def in_owned_folder(files: list[dict], area: str, owned: list[str] | None) -> list[dict]:
    """The area's files (under `area/`) moved under the first folder the task owns, when the plan's
    contract gives the area's folder to another task (a plan with two frontends: the second owns
    `src/<task>`). Files outside the area's folder stay where they are (a flaw's, on purpose)."""
    if not owned or owns(owned, area):
        return files
    return [
        {**f, "path": f"{owned[0]}/{f['path'].removeprefix(area + '/')}"}
        if f["path"].startswith(area + "/")
        else f
        for f in files
    ]


def codegen(meta: dict, flaws: set[str]) -> dict:
    description = meta.get("description", "")
    tables = list(contract_tables(meta))
    if meta.get("kind") == "remediation" and meta.get("conflict_kind") in TREE_FIXES:
        # A fix of a contract mismatch or a failing gate: the task's files again, as planned.
        redone = codegen({**meta, "kind": "plan", "description": meta.get("root_description", "")}, set())
        summary = f"Fixed {meta.get('root', 'the task')} for the {meta['conflict_kind']} conflict: "
        return {**redone, "summary": summary + redone["summary"]}
    if meta.get("kind") == "remediation":
        files = [dict(f) for f in meta.get("target_files", [])]
        fixed = []
        for item in files:
            if item["path"].endswith(".py"):
                item["content"] = remediate_python(item["content"])
                fixed.append(item["path"])
        return {
            "summary": (
                f"Remediated {', '.join(fixed) or 'the flagged code'}: "
                "queries parameterised instead of string-formatted."
            ),
            "files": files,
            "findings": [],
        }
    area = area_of(description, "codegen")
    contract = meta.get("contract") or {}
    accounts = has_accounts(contract)
    alone = not meta.get("owned") and not meta.get("follow_up")  # a new project's one task
    if area in ("frontend", "other") and alone and contract.get("tables") and contract.get("endpoints"):
        return small_app_files(meta, tables, flaws)  # the whole small app (derive.small_app)
    # A stream's description quotes the client's request after its own words.
    request = description.split(": ", 1)[-1]
    # A follow-up adding fields to one of the records ("Add a phone number field to bookings").
    adding = added_fields(request, tables) if meta.get("follow_up") else None
    if adding and adding[0] not in tables:
        adding = None
    if area == "frontend" and "contract" in meta and not contract.get("endpoints"):
        # Pages alone, calling no API: a landing page, a portfolio, or a feature of one.
        if meta.get("follow_up"):
            files = frontend_feature(request)
            summary = f"Added {', '.join(f['path'] for f in files)} ({description[:80]})."
        else:
            site = static_site_files(request)
            files, summary = site["files"], f"Next.js site: a home page with {site['sections']} sections."
        return {
            "summary": summary,
            "files": in_owned_folder(files, "frontend", meta.get("owned")),
            "findings": [],
        }
    if area == "frontend":
        files = frontend_files(
            tables,
            columns=contract_tables(meta),
            endpoints=contract_endpoints(meta, tables),
            flaws=flaws,
            accounts=accounts,
        )
        summary = f"Next.js frontend with pages for {', '.join(tables)}" + (
            ", and an account page to sign up or log in." if accounts else "."
        )
        if adding:
            shown = ", ".join(adding[1])
            summary = (
                f"The {adding[0]} page's form and list show {shown}; pages for {', '.join(tables)} kept."
            )
        elif meta.get("follow_up") and accounts and wants_accounts(request):
            summary = (
                f"Pages for {', '.join(tables)} with sign-up and log-in: an account page, and every "
                "page sends its token."
            )
        elif meta.get("follow_up") and not entities(request, placeholder=False):
            # The project's pages are there already and the request names no record to page: what
            # it asks for is a component of its own.
            feature = frontend_feature(request)
            files += feature
            added = ", ".join(f["path"] for f in feature)
            summary = f"Added {added} ({description[:80]}); pages for {', '.join(tables)} kept."
        return {
            "summary": summary,
            "files": in_owned_folder(files, "frontend", meta.get("owned")),
            "findings": [],
        }
    if area == "backend":
        endpoints = contract_endpoints(meta, tables)
        files = backend_files(
            tables,
            "sql_injection" in flaws,
            columns=contract_tables(meta),
            endpoints=endpoints,
            flaws=flaws,
            accounts=accounts,
        )
        owned = meta.get("owned")
        if owned and not owns(owned, "backend"):
            # Its tests import `app` from its own folder, which `cd backend` gives the first backend.
            files = [
                *in_owned_folder(files, "backend", owned),
                {"path": f"{owned[0]}/conftest.py", "content": ROOT_CONFTEST},
            ]
        summary = f"FastAPI backend with endpoints for {', '.join(tables)}" + (
            accounts_summary(tables, endpoints) if accounts else no_accounts_summary(tables, endpoints)
        )
        if adding:
            table, shown = adding[0], ", ".join(adding[1])
            summary = (
                f"POST /api/{table} takes {shown} (optional) and GET /api/{table} lists "
                f"{'it' if len(adding[1]) == 1 else 'them'}; "
                f"endpoints for {', '.join(tables)} kept."
            )
        elif (
            meta.get("follow_up")
            and not entities(request, placeholder=False)
            and not (accounts and wants_accounts(request))
        ):
            # "Add a rate limiter to the backend": nothing here derives it; say so. ("Add user login"
            # is derived: the summary above says what accounts do.)
            summary = (
                f"Kept the backend's endpoints for {', '.join(tables)}; the offline agent adds no "
                "backend feature of its own (a model agent writes it)."
            )
        return {"summary": summary, "files": files, "findings": []}
    folder = (meta.get("owned") or ["src"])[0]
    if description.startswith(CHECKOUT_FLOW) and tables:
        steps = [t for t in CHECKOUT_STEPS if t in tables] or tables[:3]
        return {
            "summary": (
                f"Checkout flow through the API ({' → '.join(steps)}), with an end-to-end test "
                "that runs the backend on the project's schema."
            ),
            "files": checkout_flow_files(contract_tables(meta), steps, folder),
            "findings": [],
        }
    slug = "_".join(_words(description)[:4]) or "module"
    # The client's text as a docstring: no quote to close it, no backslash to escape from it.
    docstring = re.sub(r'["\\\x00-\x1f]', " ", description[:200])
    body = textwrap.dedent(f'''\
        """{docstring}"""


        def handle(payload: dict) -> dict:
            """Validate the payload and return a normalised copy."""
            if not isinstance(payload, dict):
                raise TypeError("payload must be a dict")
            return {{key.strip().lower(): value for key, value in payload.items()}}
        ''')
    return {
        # What no rule above derives from the request is a model's to write: say what this is.
        "summary": f"Wrote {slug}.py, a skeleton entry point (the offline agent writes no logic of its own).",
        "files": [{"path": f"{folder}/{slug}.py", "content": body}],
        "findings": [],
    }


# What a backend without accounts does not do, and how to get it.
ACCOUNTS_BRING = ': that comes with accounts (a follow-up such as "Add user login").'
NO_ACCOUNTS = "; anyone adds and lists records, and no one changes or deletes them" + ACCOUNTS_BRING


def no_accounts_summary(tables: list[str], endpoints: list[dict]) -> str:
    """What a backend without accounts does with the records, for its summary: a list everyone keeps
    together (`SHARED_LISTS`) anyone changes too; the rest no one."""
    shared = [t for t in tables if serves_one_record(endpoints, t, "PATCH")]
    if not shared:
        return NO_ACCOUNTS
    said = (
        f"; anyone adds, lists, changes and deletes {', '.join(shared)}: one list kept by all who use the app"
    )
    rest = [t for t in tables if t not in shared]
    if rest:
        return (
            said
            + f"; anyone adds and lists {', '.join(rest)}, and no one changes or deletes them{ACCOUNTS_BRING}"
        )
    return said + ' (a follow-up such as "Add user login" gives each user their own).'


def accounts_summary(tables: list[str], endpoints: list[dict]) -> str:
    """What a backend with accounts does with the records, for its summary."""
    private = [t for t in tables if t not in PUBLIC_RECORDS]
    public = [t for t in tables if t in PUBLIC_RECORDS]
    said = "; users sign up and log in with an email and a password"
    if private:
        said += f", each sees only their own {', '.join(private)}"
    if public:
        said += f", everyone sees {', '.join(public)} and a user adds their own"
    changed = {t for t in tables if serves_one_record(endpoints, t, "PATCH")}
    deleted = {t for t in tables if serves_one_record(endpoints, t, "DELETE")}
    for verbs, which in (
        ("changes and deletes", changed & deleted),
        ("changes", changed - deleted),
        ("deletes", deleted - changed),
    ):
        if which:
            said += f"; a user {verbs} their own {', '.join(t for t in tables if t in which)}"
    return said + "."


def small_app_files(meta: dict, tables: list[str], flaws: set[str]) -> dict:
    """A small app by one agent: the schema of its records, the backend serving them and the
    frontend's pages posting them."""
    columns, endpoints = contract_tables(meta), contract_endpoints(meta, tables)
    accounts = has_accounts(meta.get("contract"))
    files = [  # the backend first: the agent's own test goes beside it, in backend/tests
        *backend_files(
            tables,
            "sql_injection" in flaws,
            columns=columns,
            endpoints=endpoints,
            flaws=flaws,
            accounts=accounts,
        ),
        *frontend_files(tables, columns=columns, endpoints=endpoints, flaws=flaws, accounts=accounts),
        *schema(meta, flaws)["files"],
    ]
    return {
        "summary": f"A small app for {', '.join(tables)}: schema, FastAPI backend and Next.js pages.",
        "files": files,
        "findings": [],
    }


CHECKOUT_MODULE = '''"""Checkout through the project's API: {arrow}, each record created in turn.

`client` is any HTTP client whose `post` takes a path and `json`: an `httpx.Client` with the
backend's `base_url`, or FastAPI's `TestClient`."""


class CheckoutError(Exception):
    """A step the backend refused: which one, its status and its answer."""


def created(response, step: str) -> int:
    if response.status_code != 200:
        raise CheckoutError(f"{{step}}: {{response.status_code}} {{response.text}}")
    return response.json()["id"]
{creates}

def checkout(client, records: dict) -> dict:
    """Each step's record (`records[step]`) created in order; returns {{step: id}}. A refused step
    stops the checkout there with a CheckoutError; the steps before it stay created."""
    ids = {{}}
    for step, create in ({pairs}):
        ids[step] = create(client, records[step])
    return ids
'''
CHECKOUT_CREATE = """

def create_{table}(client, record: dict) -> int:
    return created(client.post("/api/{table}", json=record), "{table}")
"""
CHECKOUT_TEST = '''"""End to end: the backend on the project's schema, a checkout through its API."""

import pathlib
import secrets
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = pathlib.Path(__file__).resolve().parents[{depth}]
SCHEMA = ROOT / "database" / "schema.sql"
BACKEND = ROOT / "backend"
if not SCHEMA.is_file() or not (BACKEND / "app" / "main.py").is_file():
    pytest.skip("the project has no backend or no schema to run together", allow_module_level=True)
sys.path[:0] = [str(HERE.parent), str(BACKEND)]

from app.main import app  # noqa: E402
from checkout_flow import CheckoutError, checkout  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

RECORDS = {records}


{signed_in_client}

def test_a_checkout_creates_every_record_in_order(client):
    ids = checkout(client, RECORDS)
    assert list(ids) == {steps!r}
{listed}

def test_a_refused_step_stops_the_checkout_there(client):
    with pytest.raises(CheckoutError, match="^{last}: 422"):
        checkout(client, {{**RECORDS, "{last}": {{}}}})
    assert client.get("/api/{first}").json()[0]["name"] == RECORDS["{first}"]["name"]
    assert client.get("/api/{last}").json() == []
'''
CHECKOUT_LISTED = """\
    assert {{"id": ids["{table}"], **RECORDS["{table}"]}} in client.get("/api/{table}").json()
"""


def sample_record(table: str, columns: dict[str, str]) -> dict:
    """A record the backend takes for `table`: every column it requires, with a plausible value."""
    record = {}
    for column, kind in columns.items():
        if column in GENERATED:
            continue
        json_type = sql_type(kind)
        if json_type == "boolean":
            record[column] = True  # not the default: listed back, it shows it was kept
        elif json_type == "integer":
            record[column] = 2  # a count the backend's validation takes, and a price in cents
        elif json_type == "string (ISO 8601)":
            record[column] = "2026-06-01T19:00:00"
        elif column == "status":
            record[column] = "pending"
        else:
            record[column] = f"{table} {column} from the test"
    return record


def checkout_flow_files(columns: dict[str, dict[str, str]], steps: list[str], folder: str) -> list[dict]:
    """The checkout flow through the API's endpoints, one step a record, and its end-to-end test:
    the backend's app on a SQLite database made from the project's schema, driven by FastAPI's
    TestClient."""
    module = CHECKOUT_MODULE.format(
        arrow=" → ".join(steps),
        creates="".join(CHECKOUT_CREATE.format(table=t) for t in steps),
        pairs=", ".join(f'("{t}", create_{t})' for t in steps) + ("," if len(steps) == 1 else ""),
    )
    test = CHECKOUT_TEST.format(
        depth=folder.count("/") + 2,
        records=pprint.pformat(
            {t: sample_record(t, columns[t]) for t in steps},
            width=96,
            sort_dicts=False,
        ),
        steps=steps,
        listed="".join(CHECKOUT_LISTED.format(table=t) for t in steps),
        first=steps[0],
        last=steps[-1],
        signed_in_client=SIGNED_IN_CLIENT,
    )
    return [
        {"path": f"{folder}/checkout_flow.py", "content": module},
        {"path": f"{folder}/tests/test_checkout_end_to_end.py", "content": test},
    ]


def _title(table: str) -> str:
    """A page's title as a reader writes it: "Menu items", not menu_items."""
    return table.replace("_", " ").capitalize()


def _page_name(table: str) -> str:
    return table.rstrip("s").title().replace("_", "")


FRONTEND_PAGE = """\
import {{ {hooks} }} from "react";

import Look from "../lib/look";

const API_BASE = process.env.NEXT_PUBLIC_API_BASE ?? "";
const PAGE = 100; // the rows the API answers at a time

export default function {name}Page() {{
  const [rows, setRows] = useState([]);
  const [more, setMore] = useState(false);
  const [problem, setProblem] = useState("");
  // The first page of rows, or (`offset`) the next one after those shown.
  function load(offset = 0) {{
    fetch(`${{API_BASE}}{path}?offset=${{offset}}`{get_options})
      .then(async (response) => {{
        const answer = await response.json().catch(() => null);
        if (!response.ok || !Array.isArray(answer)) {{
          throw new Error(typeof answer?.detail === "string" ? answer.detail : `HTTP ${{response.status}}`);
        }}
        setRows((shown) => (offset ? [...shown, ...answer] : answer));
        setMore(answer.length === PAGE);
      }})
      .catch((error) => setProblem(`could not load the list: ${{error.message}}`));
  }}
  useEffect(() => load(), []);
{post}  return (
    <main>
      <Look />
      <h1>{title}</h1>
{account}{form}      {{problem && <p role="alert">{{problem}}</p>}}
{listing}      {{more && <button type="button" onClick={{() => load(rows.length)}}>More</button>}}
    </main>
  );
}}

// A row's values as one line, leaving out those it has none for.
function listed(values) {{
  return values.filter((value) => value != null && value !== "").join(" · ");
}}
{helpers}"""
# The page's rows (`{rows}`, each `row`), indented where the page puts them: in the page itself, or
# in each column of a board (`FRONTEND_BOARD`).
FRONTEND_ROWS = """\
<ul>
  {{{rows}.map((row) => (
    <li key={{row.id}}{row_current}>
      {{listed([{shown}])}}{row_flags}{row_buttons}
    </li>
  ))}}
</ul>
"""
# A kanban board: a column per stage (`byStage`), its `cards` listed as FRONTEND_ROWS; a card's stage
# changed in its Edit form moves it to that column.
FRONTEND_BOARD = """\
      <div className="board">
        {{byStage(rows).map(([stage, cards]) => (
          <section key={{stage}} aria-label={{stage}}>
            <h2>{{stage}}</h2>
{cards}          </section>
        ))}}
      </div>
"""
FRONTEND_BY_STAGE = """
// The usual order of a board's stages; any other comes after them, in the order the rows first name it.
const STAGES = ["backlog", "to do", "todo", "ready", "in progress", "doing", "review", "blocked", "done"];

// The rows by stage, the stages in that order.
function byStage(rows) {
  const stages = new Map();
  for (const row of rows) stages.set(row.stage, [...(stages.get(row.stage) ?? []), row]);
  const rank = (stage) => {
    const at = STAGES.indexOf(String(stage).trim().toLowerCase());
    return at < 0 ? STAGES.length : at;
  };
  return Array.from(stages.entries()).sort(([one], [other]) => rank(one) - rank(other));
}
"""
FRONTEND_POST = """\

  async function add(form) {{
    const values = formValues(form);
    const response = await fetch(`${{API_BASE}}{path}`, {{
      method: "POST",
      headers: {{ "Content-Type": "application/json"{post_auth} }},
      body: JSON.stringify(values),
    }});
    const answer = await response.json().catch(() => ({{}}));
    if (!response.ok) {{
      setProblem(typeof answer.detail === "string" ? answer.detail : `refused (${{response.status}})`);
      return;
    }}
    setProblem("");
    form.reset();
    // Listed last, as the API lists by id, the rows shown kept; with rows still to fetch, More brings
    // it after them.
    if (!more) setRows((shown) => [...shown, {{ ...values, id: answer.id }}]);
  }}

"""
# The form fills with a row's values to change it; a field emptied is cleared (sent as null).
FRONTEND_EDIT = """\
  const [editing, setEditing] = useState(null);
  const formRef = useRef(null);
  function edit(row) {{
    setEditing(row.id);
    for (const input of Array.from(formRef.current.elements) as HTMLInputElement[]) {{
      const value = row[input.name];
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (input.name) input.value = value == null ? "" : "cents" in input.dataset ? value / 100 : value;
    }}
  }}
  function stopEditing() {{
    setEditing(null);
    formRef.current.reset();
  }}
  async function patch(id, values) {{
    const response = await fetch(`${{API_BASE}}{path}/${{id}}`, {{
      method: "PATCH",
      headers: {{ "Content-Type": "application/json"{auth} }},
      body: JSON.stringify(values),
    }});
    if (!response.ok) {{
      const answer = await response.json().catch(() => ({{}}));
      const why = typeof answer.detail === "string" ? answer.detail : `HTTP ${{response.status}}`;
      setProblem(`could not save it: ${{why}}`);
    }} else {{
      setProblem("");
    }}
    return response.ok;
  }}
  async function save(form) {{
    const values = formValues(form);
    if (await patch(editing, values)) {{
      showChanged(editing, values); // an empty field is cleared, as the API clears a null one
      stopEditing();
    }}
  }}
  // A saved change shown in its row, the other rows (and the pages of them shown) left as they are.
  function showChanged(id, changes) {{
    setRows((shown) => shown.map((row) => (row.id === id ? {{ ...row, ...changes }} : row)));
  }}

"""
# A row's yes-or-no field, ticked or not in place.
FRONTEND_FLIP = """\
  function flip(row, name) {
    showChanged(row.id, { [name]: !row[name] }); // ticked at once, put back if the API refuses
    patch(row.id, { [name]: !row[name] }).then((saved) => {
      if (!saved) load();
    });
  }

"""
FRONTEND_ROW_FLAG = (
    ' <label><input type="checkbox" checked={{Boolean(row.{column})}}'
    ' onChange={{() => flip(row, "{column}")}} /> {label}</label>'
)
FRONTEND_ROW_FLAG_SHOWN = '{{row.{column} ? " ✓ {label}" : ""}}'
FRONTEND_DELETE = """\
  async function remove(id) {{
    const response = await fetch(`${{API_BASE}}{path}/${{id}}`, {{ method: "DELETE"{auth} }});
    if (response.ok) {{
      setRows((shown) => shown.filter((row) => row.id !== id));
    }} else {{
      const answer = await response.json().catch(() => ({{}}));
      const why = typeof answer.detail === "string" ? answer.detail : `HTTP ${{response.status}}`;
      setProblem(`could not delete it: ${{why}}`);
      load();
    }}
  }}

"""
FRONTEND_FORM = """\
      <form onSubmit={{(event) => {{ event.preventDefault(); add(event.currentTarget); }}}}>
{inputs}        <button type="submit">Add</button>
      </form>
"""
FRONTEND_EDIT_FORM = """\
      <form
        ref={{formRef}}
        onSubmit={{(event) => {{
          event.preventDefault();
          (editing === null ? add : save)(event.currentTarget);
        }}}}
      >
{inputs}        <button type="submit">{{editing === null ? "Add" : "Save changes"}}</button>
        {{editing !== null && <button type="button" onClick={{stopEditing}}>Cancel</button>}}
      </form>
"""
FRONTEND_FORM_VALUES = """
// The form's values by input name: a checkbox's as true or false, a number input's as a number (an
// amount's, typed as 12.99, in cents), an empty one's as null.
function formValues(form: HTMLFormElement) {
  const inputs = Array.from(form.elements) as HTMLInputElement[];
  return Object.fromEntries(
    inputs.filter((input) => input.name).map((input) => [
      input.name,
      input.type === "checkbox"
        ? input.checked
        : input.value === ""
          ? null
          : input.type !== "number"
            ? input.value
            : "cents" in input.dataset
              ? Math.round(input.valueAsNumber * 100)
              : input.valueAsNumber,
    ]),
  );
}
"""
FRONTEND_AMOUNT = """
// An amount kept in cents, as the reader's locale writes it with two decimals ("1,299.50").
function amount(cents) {
  return typeof cents === "number"
    ? (cents / 100).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    : cents;
}
"""
FRONTEND_WHEN = """
// A date and time as the reader's locale writes it ("Dec 31, 2026, 9:00 AM"); the API keeps ISO 8601.
function when(value) {
  const date = new Date(value);
  return value == null || isNaN(date.getTime())
    ? value
    : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
"""
# Every page's look, in one place: readable widths and spacing, in the colours of the page's scheme
# (light, or dark where a dark mode sets it). It goes into the page as raw HTML: never a `</style>`.
FRONTEND_LOOK = """\
import Head from "next/head";

// The pages' look: one stylesheet and the tab's icon, which each page renders first.
const LOOK = `
:root { font-family: system-ui, sans-serif; line-height: 1.5; }
body { margin: 0; }
main { max-width: 48rem; margin: 0 auto; padding: 2rem 1rem; }
h1 { margin: 0 0 0.5rem; }
form { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center; margin: 1rem 0; }
input, button { font: inherit; padding: 0.35rem 0.6rem; border: 1px solid #8888; border-radius: 6px; }
input[type=checkbox] { width: 1.1rem; height: 1.1rem; margin: 0; }
button { cursor: pointer; background: #2563eb; border-color: #2563eb; color: #fff; }
button[type=button], li button { background: transparent; border-color: #8888; color: inherit; }
ul { list-style: none; padding: 0; }
li { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center; padding: 0.5rem 0; }
li { border-bottom: 1px solid #8884; }
li button:first-of-type { margin-left: auto; }
li[aria-current] { background: #2563eb1f; border-radius: 6px; padding-inline: 0.5rem; }
.board { display: grid; grid-template-columns: repeat(auto-fit, minmax(13rem, 1fr)); gap: 1rem; }
.board section { background: #8881; border-radius: 8px; padding: 0 0.75rem; }
.board h2 { font-size: 1rem; margin: 0.75rem 0 0; }
label { display: flex; gap: 0.35rem; align-items: center; }
[role=alert] { color: #dc2626; }
a { color: #2563eb; }
`;

export default function Look() {
  return (
    <>
      <Head>
        <link rel="icon" href="/favicon.svg" />
      </Head>
      <style dangerouslySetInnerHTML={{ __html: LOOK }} />
    </>
  );
}
"""
FRONTEND_INPUT = '        <input name="{column}" type="{kind}" placeholder="{label}"{required} />\n'
# An amount kept in cents (`price_cents`), typed and shown as 12.99.
FRONTEND_CENTS_INPUT = (
    '        <input name="{column}" type="number" step="0.01" placeholder="{label}" data-cents{required} />\n'
)
FRONTEND_CHECKBOX = '        <label><input name="{column}" type="checkbox" /> {label}</label>\n'
# Next.js's own defaults for a TypeScript project, so that its first build changes nothing.
NEXT_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2017",
        "lib": ["dom", "dom.iterable", "esnext"],
        "allowJs": True,
        "skipLibCheck": True,
        "strict": False,
        "noEmit": True,
        "incremental": True,
        "module": "esnext",
        "esModuleInterop": True,
        "moduleResolution": "node",
        "resolveJsonModule": True,
        "isolatedModules": True,
        "jsx": "preserve",
    },
    "include": ["next-env.d.ts", "**/*.ts", "**/*.tsx"],
    "exclude": ["node_modules"],
}
NEXT_PACKAGE = {
    "name": "frontend",
    "private": True,
    "scripts": {"dev": "next dev", "build": "next build", "start": "next start"},
    "dependencies": {"next": "15.5.29", "react": "19.2.9", "react-dom": "19.2.9"},
    "devDependencies": {"@types/node": "22.10.0", "@types/react": "19.2.18", "typescript": "5.7.2"},
}
FRONTEND_GITIGNORE = "node_modules/\n.next/\nnext-env.d.ts\n__pycache__/\n.pytest_cache/\n"
# `next dev` and `next start` pass /api on to the backend, so the pages call it on their own origin.
NEXT_CONFIG = """\
/** /api is the FastAPI backend's (`uvicorn app.main:app` in ../backend): passed on to it. */
const BACKEND_URL = process.env.BACKEND_URL ?? "http://localhost:8000";

module.exports = {
  async rewrites() {
    return [{ source: "/api/:path*", destination: `${BACKEND_URL}/api/:path*` }];
  },
};
"""


# The form input of each JSON type a column's SQL type has (`sql_type`), or of its name; else text.
INPUT_TYPES = {"integer": "number", "string (ISO 8601)": "datetime-local", "boolean": "checkbox"}
NAMED_INPUTS = {"email": "email", "phone": "tel", "url": "url", "website": "url"}


def input_type(column: str, kind: str) -> str:
    if sql_type(kind) in INPUT_TYPES:
        return INPUT_TYPES[sql_type(kind)]
    return NAMED_INPUTS.get(column.rsplit("_", 1)[-1], "text")


def required_column(kind: str) -> bool:
    """Whether a row needs a value for a column of this SQL type: NOT NULL, and no DEFAULT to give it
    one. A column added to a table with rows is nullable, so a form may leave it empty."""
    upper = kind.upper()
    return "NOT NULL" in upper and "DEFAULT" not in upper


FRONTEND_INDEX = """\
import Link from "next/link";

import Look from "../lib/look";

// The home page: a link to each record's page (the app, and what its header holds, stays loaded).
export default function Home() {{
  return (
    <main>
      <Look />
      <h1>Pages</h1>
      <ul>
{links}      </ul>
    </main>
  );
}}
"""
FRONTEND_INDEX_LINK = """\
        <li>
          <Link href="/{table}">{title}</Link>
        </li>
"""


FRONTEND_README = """\
# Frontend

A Next.js app: a page per record with its list and a form, and a home page linking to them.
It calls `/api/…` on its own origin, and Next passes those calls on to the backend at
`$BACKEND_URL` (default `http://localhost:8000`).

    npm install
    BACKEND_URL=http://localhost:8001 npm run dev      # http://localhost:3000

For production, `BACKEND_URL=… npm run build` then `npm start`: the address is fixed when it builds.
"""


# The tab's icon (the pages link it; without one the browser's request for /favicon.ico is a 404).
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
    'fill="#2563eb"/><path d="M9 16.5l4.5 4.5L23 11.5" fill="none" stroke="#fff" stroke-width="3.5" '
    'stroke-linecap="round" stroke-linejoin="round"/></svg>\n'
)


def next_app_files(readme: str) -> list[dict]:
    """What every generated Next.js app has: its package, TypeScript settings, ignores and README."""
    return [
        {"path": "frontend/package.json", "content": json.dumps(NEXT_PACKAGE, indent=2) + "\n"},
        {"path": "frontend/tsconfig.json", "content": json.dumps(NEXT_TSCONFIG, indent=2) + "\n"},
        {"path": "frontend/.gitignore", "content": FRONTEND_GITIGNORE},
        {"path": "frontend/README.md", "content": readme},
        {"path": "frontend/public/favicon.svg", "content": FAVICON},
    ]


def frontend_files(
    tables: list[str],
    *,
    columns: dict[str, dict[str, str]] | None = None,
    endpoints: list[dict] | None = None,
    flaws: set[str] | frozenset = frozenset(),
    accounts: bool = False,
) -> list[dict]:
    """A Next.js app with a page per table: it lists the rows (GET) and, where the contract has them,
    a form posts a new row (POST) or changes one (PATCH; a yes-or-no field is ticked in the row
    itself), and a button deletes one (DELETE); a home page links to them; `next.config.js` passes
    /api on to the backend. With `accounts`, an account page signs up or logs in, and the pages send
    its token. Flaws:
    "interface_mismatch" calls the first table by another name (bookings → reservations),
    "ownership_violation" also writes a file of the backend's."""
    columns = columns or {t: table_columns(t) for t in tables}
    if endpoints is None:
        endpoints = [{"method": "GET", "path": f"/api/{t}"} for t in tables]
    pages = []
    misnamed = "bookings" if "bookings" in tables else tables[0] if tables else None
    for table in tables:
        served = {e["method"] for e in endpoints if e["path"] == f"/api/{table}"}
        if not served:
            continue
        path = f"/api/{table}"
        if table == misnamed and "interface_mismatch" in flaws:
            path = "/api/reservations" if table == "bookings" else f"/api/{table.rstrip('s')}"
        name = _page_name(table)
        fields = {c: kind for c, kind in columns.get(table, {}).items() if c not in GENERATED}
        flags = [c for c, kind in fields.items() if sql_type(kind) == "boolean"]
        # What the backend lists of a row, as text (a date and time as the reader's locale writes it,
        # an amount kept in cents as 12.99); its yes-or-no fields apart.
        timed = [c for c, kind in fields.items() if input_type(c, kind) == "datetime-local"]
        cents = [c for c, kind in fields.items() if c.endswith("_cents") and sql_type(kind) == "integer"]
        board = "stage" in fields  # a kanban board's cards: a column per stage, which they leave unsaid
        shown = ", ".join(
            f"when(row.{c})" if c in timed else f"amount(row.{c})" if c in cents else f"row.{c}"
            for c in [c for c in fields if c not in flags and not (board and c == "stage")] or ["name"]
        )
        post = form = buttons = helpers = ""
        edits = {"GET", "POST"} <= served and serves_one_record(endpoints, table, "PATCH")
        if "POST" in served:
            post = FRONTEND_POST.format(path=path, post_auth=", ...signedIn()" if accounts else "")
            inputs = "".join(
                (
                    FRONTEND_CHECKBOX
                    if c in flags
                    else FRONTEND_CENTS_INPUT
                    if c in cents
                    else FRONTEND_INPUT
                ).format(
                    column=c,
                    kind=input_type(c, kind),
                    label=(c.removesuffix("_cents") if c in cents else c).replace("_", " "),
                    required=" required" if required_column(kind) else "",
                )
                for c, kind in fields.items()
            )
            form = (FRONTEND_EDIT_FORM if edits else FRONTEND_FORM).format(inputs=inputs)
            helpers += FRONTEND_FORM_VALUES
        if edits:
            post += FRONTEND_EDIT.format(path=path, auth=", ...signedIn()" if accounts else "")
            post += FRONTEND_FLIP if flags else ""
            buttons += " <button onClick={() => edit(row)}>Edit</button>"
        row_flags = "".join(
            (FRONTEND_ROW_FLAG if edits else FRONTEND_ROW_FLAG_SHOWN).format(
                column=c, label=c.replace("_", " ")
            )
            for c in flags
        )
        if {"GET", "POST"} <= served and serves_one_record(endpoints, table, "DELETE"):
            post += FRONTEND_DELETE.format(path=path, auth=", headers: signedIn()" if accounts else "")
            buttons += " <button onClick={() => remove(row.id)}>Delete</button>"
        listing = FRONTEND_ROWS.format(
            rows="cards" if board else "rows",
            row_current=" aria-current={editing === row.id || undefined}" if edits else "",
            shown=shown,
            row_flags=row_flags,
            row_buttons=buttons,
        )
        content = FRONTEND_PAGE.format(
            name=name,
            title=_title(table),
            hooks="useEffect, useRef, useState" if edits else "useEffect, useState",
            path=path,
            post=post,
            listing=FRONTEND_BOARD.format(cards=textwrap.indent(listing, " " * 12))
            if board
            else textwrap.indent(listing, " " * 6),
            form=form,
            get_options=", { headers: signedIn() }" if accounts else "",
            helpers=helpers
            + (FRONTEND_WHEN if timed else "")
            + (FRONTEND_AMOUNT if cents else "")
            + (FRONTEND_SIGNED_IN if accounts else "")
            + (FRONTEND_BY_STAGE if board else ""),
            account='      <a href="/account">Account: sign up, log in or out</a>\n' if accounts else "",
        )
        pages.append({"path": f"frontend/pages/{table}.tsx", "content": content})
    if pages and accounts:
        pages.append({"path": "frontend/pages/account.tsx", "content": FRONTEND_ACCOUNT})
    if pages:
        links = "".join(
            FRONTEND_INDEX_LINK.format(table=table, title=_title(table))
            for table in (page["path"].rsplit("/", 1)[1][: -len(".tsx")] for page in pages)
        )
        pages.append({"path": "frontend/pages/index.tsx", "content": FRONTEND_INDEX.format(links=links)})
    files = [
        *next_app_files(FRONTEND_README),
        {"path": "frontend/next.config.js", "content": NEXT_CONFIG},
        *([{"path": "frontend/lib/look.tsx", "content": FRONTEND_LOOK}] if pages else []),
        *pages,
    ]
    if "ownership_violation" in flaws:
        files.append({"path": "backend/app/cors.py", "content": CORS})
    return files


STATIC_HOME = """\
import Head from "next/head";

// The site's home page: its sections, each linked from the top (a first draft of the text to edit).
const SITE = {site};

const STYLE = `
  body {{ margin: 0; font-family: system-ui, sans-serif; line-height: 1.5; }}
  .site-top, main, footer {{ max-width: 48rem; margin: 0 auto; padding: 1rem; }}
  .site-top nav {{ display: flex; gap: 1rem; flex-wrap: wrap; }}
  section {{ padding: 2rem 0; border-top: 1px solid #ddd; }}
`;

export default function Home() {{
  return (
    <>
      <Head>
        <title>{{SITE.title}}</title>
        <link rel="icon" href="/favicon.svg" />
      </Head>
      <style>{{STYLE}}</style>
      <div className="site-top">
        <h1>{{SITE.title}}</h1>
        <p>{{SITE.tagline}}</p>
        <nav>
          {{SITE.sections.map((section) => (
            <a key={{section.id}} href={{`#${{section.id}}`}}>
              {{section.title}}
            </a>
          ))}}
        </nav>
      </div>
      <main>
        {{SITE.sections.map((section) => (
          <section key={{section.id}} id={{section.id}}>
            <h2>{{section.title}}</h2>
            <p>{{section.text}}</p>
          </section>
        ))}}
      </main>
      <footer>{{SITE.title}}</footer>
    </>
  );
}}
"""
STATIC_README = """\
# Frontend

A Next.js site: one home page (`pages/index.tsx`) with its sections, linked from its top. The
text of each section is a first draft to edit in the `SITE` constant at the top of that page.

    npm install
    npm run dev                     # http://localhost:3000

For production, `npm run build` then `npm start`.
"""
# A site's sections: (id, title, the words asking for it, a first draft of its text).
SITE_SECTIONS = (
    ("about", "About", r"about", "Who we are, what we do and why it matters to you."),
    ("services", "Services", r"services?", "What we offer, and how we work with you."),
    (
        "menu",
        "Menu",
        r"menus?|caf[eé]|coffee|bakery|restaurant|bar|food",
        "What we serve, and today's specials.",
    ),
    (
        "gallery",
        "Gallery",
        r"galler(y|ies)|portfolio|photo\w*|pictures?|art\w*",
        "A selection of recent work.",
    ),
    ("pricing", "Pricing", r"pric\w*|plans?", "Clear prices, no surprises."),
    ("testimonials", "Testimonials", r"testimonials?|reviews?", "What our clients say about us."),
    ("team", "Team", r"team|staff", "The people behind the work."),
    ("faq", "Questions", r"faqs?|questions?", "Answers to the questions we hear most."),
    ("hours", "Opening hours", r"hours|opening", "When you can find us open."),
    ("location", "Location", r"location|address|map|directions", "Where to find us, and how to get here."),
    ("contact", "Contact", r"contact", "Get in touch: we answer every message within a day."),
)
# The client's words for what the site is for: "a landing page for a coffee shop" → "Coffee shop".
SITE_SUBJECT = re.compile(
    r"\bfor\s+(?:(?:a|an|the|my|our|your)\s+)?([a-z0-9][a-z0-9 '-]{0,58}?)"
    r"(?=\s+(?:with|that|which|where|who|in|to)\b|[,.;:!?]|$)",
    re.I,
)


def static_site_files(request: str) -> dict:
    """A Next.js site of one page, its sections drawn from the request's words (about and contact
    always). The client's text reaches the page only as letters, digits, spaces and hyphens, inside
    a JSON string: never as markup or code."""
    found = SITE_SUBJECT.search(request)
    subject = re.sub(r"[^A-Za-z0-9 -]+", "", found.group(1) if found else "").strip()
    if not subject:
        words = [w for w in _words(request) if w not in FILLER_WORDS and w not in {"build", "create", "make"}]
        subject = " ".join(words[:4]) or "our site"
    if re.search(r"\bportfolio\b", request, re.I) and "portfolio" not in subject.lower():
        subject += " portfolio"
    title = subject[:1].upper() + subject[1:]
    text = request.lower()
    wanted = {key for key, _, words, _ in SITE_SECTIONS if re.search(rf"\b({words})\b", text)}
    wanted |= {"about", "contact"}
    if len(wanted) == 2:
        wanted.add("services")
    sections = [
        {"id": key, "title": name, "text": draft} for key, name, _, draft in SITE_SECTIONS if key in wanted
    ]
    site = {"title": title, "tagline": f"Welcome to the {subject.lower()}.", "sections": sections}
    home = STATIC_HOME.format(site=json.dumps(site, indent=2, ensure_ascii=True))
    files = [*next_app_files(STATIC_README), {"path": "frontend/pages/index.tsx", "content": home}]
    return {"files": files, "sections": len(sections)}


# Words of a follow-up's request that name no part of the feature.
FILLER_WORDS = {
    "add",
    "a",
    "an",
    "the",
    "to",
    "for",
    "of",
    "on",
    "in",
    "with",
    "and",
    "frontend",
    "ui",
    "new",
    "website",
    "site",
    "app",
    "shop",
    "store",
}
FRONTEND_FEATURE = """\
import {{ useEffect, useState }} from "react";

// {summary}
export default function {name}() {{
  const [on, setOn] = useState(false);
  useEffect(() => {{
    // Pages and styles key on the attribute: <html data-{attribute}="on">.
    document.documentElement.dataset.{key} = on ? "on" : "off";{effect}
  }}, [on]);
  return (
    <button type="button" aria-pressed={{on}} onClick={{() => setOn(!on)}}>
      {label}: {{on ? "on" : "off"}}
    </button>
  );
}}
"""
DARK_EFFECT = """
    document.documentElement.style.colorScheme = on ? "dark" : "light";
    document.body.style.background = on ? "#111" : "";
    document.body.style.color = on ? "#eee" : "";"""
# The app around every page: the project's components in a header above it.
FRONTEND_APP = """\
import type {{ AppProps }} from "next/app";
{imports}
export default function App({{ Component, pageProps }}: AppProps) {{
  return (
    <>
      <header style={{{{ display: "flex", gap: "1rem", alignItems: "center" }}}}>
{mounts}      </header>
      <Component {{...pageProps}} />
    </>
  );
}}
"""
COMPONENT = re.compile(r"^frontend/components/([A-Z][A-Za-z]*)\.tsx$")


FEATURE_PAGE = """\
import Link from "next/link";

// {summary}
export default function {name}Page() {{
  return (
    <main>
      <Link href="/">Home</Link>
      <h1>{title}</h1>
      <p>{text}</p>
    </main>
  );
}}
"""
FEATURE_LINK = """\
import Link from "next/link";

// The header's link to the {title} page, on every page.
export default function {name}Link() {{
  return <Link href="/{slug}">{title}</Link>;
}}
"""
PAGE_NOUNS = {"page", "section"}
ACRONYMS = {"faq", "api", "ui", "seo", "rsvp"}


def frontend_feature(description: str) -> list[dict]:
    """A follow-up's own files, named after its request's words (letters only: the request is the
    client's text, never code). A page it asks for ("Add an about page") is a page of its own and
    a link to it, a component the header mounts; anything else is a component that sets an
    attribute of the page while on (a dark mode also darkens the page)."""
    words = _words(description)
    at = next((i for i, w in enumerate(words) if w in PAGE_NOUNS), None)
    named = [w for w in words[:at][-3:] if w not in FILLER_WORDS] if at is not None else []
    if named:
        return feature_page(named, " ".join(words)[:120])
    return [feature_toggle(description)]


def feature_page(words: list[str], summary: str) -> list[dict]:
    name = "".join(w.title() for w in words)
    slug = "-".join(words)
    title = " ".join(w.upper() if w in ACRONYMS else w for w in words)
    title = title[:1].upper() + title[1:]
    text = next(
        (draft for key, _, pattern, draft in SITE_SECTIONS if re.fullmatch(rf"{key}|{pattern}", slug)),
        f"{title}: a first draft of this page, to edit.",
    )
    return [
        {
            "path": f"frontend/pages/{slug}.tsx",
            "content": FEATURE_PAGE.format(summary=summary, name=name, title=title, text=text),
        },
        {
            "path": f"frontend/components/{name}Link.tsx",
            "content": FEATURE_LINK.format(name=name, slug=slug, title=title),
        },
    ]


def feature_toggle(description: str) -> dict:
    words = [w for w in _words(description) if w not in FILLER_WORDS][:4] or ["feature"]
    name = "".join(w.title() for w in words)
    content = FRONTEND_FEATURE.format(
        name=name,
        key=name[0].lower() + name[1:],
        attribute="-".join(words),
        effect=DARK_EFFECT if "dark" in words else "",
        label=" ".join(words).capitalize(),
        summary=" ".join(_words(description))[:120],
    )
    return {"path": f"frontend/components/{name}.tsx", "content": content}


def frontend_app(components: list[str]) -> dict:
    """`pages/_app.tsx` mounting these components (names) above every page, one line each, so that
    two follow-ups adding one each merge line by line."""
    return {
        "path": "frontend/pages/_app.tsx",
        "content": FRONTEND_APP.format(
            imports="".join(f'import {c} from "../components/{c}";\n' for c in components),
            mounts="".join(f"        <{c} />\n" for c in components),
        ),
    }


def mounted(files: list[dict], listing: str | None) -> list[dict]:
    """An agent's files with `pages/_app.tsx` mounting its new components beside those the
    project has (`listing`: its `list_files` of the workspace); unchanged without a new component."""
    new = [m.group(1) for f in files if (m := COMPONENT.match(f["path"]))]
    if not new or listing is None:
        return files
    there = [m.group(1) for line in listing.splitlines() if (m := COMPONENT.match(line.split("  ")[0]))]
    return [*files, frontend_app(sorted(set(there) | set(new)))]


CORS = '"""CORS origins the frontend needs."""\n\nALLOWED_ORIGINS = ["http://localhost:3000"]\n'
VALIDATION = '''\
"""Checks of the API's payloads."""

import math


def valid_count(value) -> bool:
    """A count of people or items: a whole number from 1 to 50."""
    return isinstance(value, int) and not isinstance(value, bool) and {low} value <= 50


def missing_fields(payload: dict, fields: list[str]) -> list[str]:
    """The fields a payload lacks."""
    return [name for name in fields if payload.get(name) in (None, "")]


def not_true_or_false(payload: dict, fields: list[str]) -> list[str]:
    """The yes-or-no fields given a value other than true or false (a string "false", a 0)."""
    return [name for name in fields if payload.get(name) is not None and not isinstance(payload[name], bool)]


MAX_TEXT = 10_000  # the characters a text field holds at most


def too_long(payload: dict, fields: list[str]) -> list[str]:
    """The text fields longer than MAX_TEXT characters: a client's one request fills no disk."""
    return [name for name in fields if isinstance(payload.get(name), str) and len(payload[name]) > MAX_TEXT]


def unfit_fields(payload: dict, fields: list[str]) -> list[str]:
    """The fields whose value a column cannot hold: a list, an object, a number beyond 64 bits, NaN or
    an infinity."""
    return [name for name in fields if not _fits(payload.get(name))]


def _fits(value) -> bool:
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        # JSON's parser takes NaN and Infinity: SQLite keeps NaN as NULL, and no JSON answer holds either.
        return math.isfinite(value)
    return value is None or isinstance(value, str)
'''
# The validation module's checks, as main.py imports those its routes use.
VALIDATION_CHECKS = ("missing_fields", "not_true_or_false", "too_long", "unfit_fields", "valid_count")
VALIDATION_TEST = """\
from app.validation import missing_fields, valid_count


def test_one_is_a_valid_count():
    assert valid_count(1)


def test_counts_are_whole_numbers_up_to_fifty():
    assert valid_count(50)
    assert not valid_count(0) and not valid_count(51) and not valid_count("3") and not valid_count(True)


def test_missing_fields_are_named():
    assert missing_fields({"name": "Ada", "party_size": None}, ["name", "party_size"]) == ["party_size"]
"""
BACKEND_API_TEST = '''"""The API on a database made from the project's schema: a record posted is listed back,
and one without the fields it needs is refused."""

import json
import secrets

import pytest

from app import db

if not db.SCHEMA.is_file():
    pytest.skip("the project has no schema yet (database/schema.sql)", allow_module_level=True)

from fastapi.testclient import TestClient  # noqa: E402 (after the skip: FastAPI takes a while to load)

from app import main as api  # noqa: E402
from app.main import app  # noqa: E402

# Per table, a record the API takes and the fields it must have: one line each, so that two
# backends' tests merge line by line.
RECORDS: dict[str, dict] = {{}}
REQUIRED: dict[str, list[str]] = {{}}
{lines}

{signed_in_client}

@pytest.mark.parametrize("table", sorted(RECORDS))
def test_a_posted_record_is_listed_and_one_no_utf8_holds_refused(client, table):
    response = client.post(f"/api/{{table}}", json=RECORDS[table])
    assert response.status_code == 200, response.text
    assert {{"id": response.json()["id"], **RECORDS[table]}} in client.get(f"/api/{{table}}").json()
    # A lone surrogate, which JSON may carry and no UTF-8 holds: bad input, not a crash.
    broken = {{k: f"{{v}}\\ud800" if isinstance(v, str) else v for k, v in RECORDS[table].items()}}
    if broken != RECORDS[table]:
        headers = {{"Content-Type": "application/json"}}
        sent = client.post(f"/api/{{table}}", content=json.dumps(broken), headers=headers)
        assert sent.status_code == 422, sent.text


@pytest.mark.parametrize("table", sorted(REQUIRED))
def test_a_record_without_its_required_fields_is_refused(client, table):
    response = client.post(f"/api/{{table}}", json={{}})
    assert response.status_code == 422
    assert response.json()["detail"] == "missing: " + ", ".join(REQUIRED[table])


@pytest.mark.parametrize("table", sorted(RECORDS))
def test_a_value_no_column_holds_is_refused(client, table):
    field = next(iter(RECORDS[table]))
    for value in ([1, 2], {{"nested": 1}}, 2**64, float("nan"), float("inf")):
        # As JSON's parser takes it: NaN and Infinity too.
        body = json.dumps({{**RECORDS[table], field: value}})
        headers = {{"Content-Type": "application/json"}}
        response = client.post(f"/api/{{table}}", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == "not text or a number: " + field
    assert client.get(f"/api/{{table}}").status_code == 200


@pytest.mark.parametrize("table", sorted(RECORDS)[:1])
def test_a_text_of_more_than_ten_thousand_characters_is_refused(client, table):
    field = next(name for name, value in RECORDS[table].items() if isinstance(value, str))
    longest = client.post(f"/api/{{table}}", json={{**RECORDS[table], field: "x" * 10_000}})
    assert longest.status_code == 200, longest.text
    response = client.post(f"/api/{{table}}", json={{**RECORDS[table], field: "x" * 10_001}})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "longer than 10,000 characters: " + field


@pytest.mark.parametrize("table", sorted(RECORDS)[:1])
def test_a_list_answers_a_page_at_a_time(client, table, monkeypatch):
    monkeypatch.setattr(api, "PAGE", 2)  # pages of 2 rows, not 100: 3 rows make two of them
    made = [client.post(f"/api/{{table}}", json=RECORDS[table]).json()["id"] for _ in range(3)]
    first = [row["id"] for row in client.get(f"/api/{{table}}").json()]
    rest = [row["id"] for row in client.get(f"/api/{{table}}", params={{"offset": 2}}).json()]
    assert (len(first), first + rest) == (2, made)
    assert client.get(f"/api/{{table}}", params={{"offset": -1}}).status_code == 422
{search_test}{flag_test}{update_test}{delete_test}'''
# What /api/search looks in, where the test can post to it.
BACKEND_API_SEARCH_TEST = """

SEARCHED = {table!r}  # the record whose names /api/search looks in


def test_a_search_takes_percent_and_underscore_as_typed(client):
    for name in ("100% juice", "100 apples", "a_b", "axb"):
        client.post(f"/api/{{SEARCHED}}", json={{**RECORDS[SEARCHED], "name": name}})

    def found(q):
        response = client.get("/api/search", params={{"q": q}})
        assert response.status_code == 200, response.text
        return sorted(row["name"] for row in response.json())

    assert found("100%") == ["100% juice"]
    assert found("a_b") == ["a_b"]
    assert found("!") == []
"""
# The records' yes-or-no fields, one line each as above.
BACKEND_API_FLAG_TEST = """

FLAGS: dict[str, list[str]] = {{}}
{lines}

@pytest.mark.parametrize("table", sorted(FLAGS))
def test_a_yes_or_no_field_is_listed_as_true_or_false(client, table):
    for value in (True, False):
        record = {{**RECORDS[table], **dict.fromkeys(FLAGS[table], value)}}
        created = client.post(f"/api/{{table}}", json=record).json()["id"]
        [listed] = [row for row in client.get(f"/api/{{table}}").json() if row["id"] == created]
        assert [listed[name] for name in FLAGS[table]] == [value] * len(FLAGS[table])
        assert all(type(listed[name]) is bool for name in FLAGS[table])  # not SQLite's 1 or 0
    first = FLAGS[table][0]
    refused = client.post(f"/api/{{table}}", json={{**RECORDS[table], first: "false"}})
    assert refused.status_code == 422 and refused.json()["detail"] == "not true or false: " + first
"""
# The records an API changes (a user's own, or a list everyone keeps together), one line each as above.
BACKEND_API_UPDATE_TEST = """

UPDATES: set[str] = set()
{lines}

@pytest.mark.parametrize("table", sorted(UPDATES))
def test_a_changed_record_is_listed_changed_with_the_rest_kept(client, table):
    record = RECORDS[table]
    created = client.post(f"/api/{{table}}", json=record).json()["id"]
    field = "name" if "name" in record else next(iter(record))
    value = record[field]
    change = {{field: value + 1 if isinstance(value, int) else f"{{value}} changed"}}
    assert client.patch(f"/api/{{table}}/{{created}}", json=change).json() == {{"updated": created}}
    assert {{"id": created, **record, **change}} in client.get(f"/api/{{table}}").json()
    assert client.patch(f"/api/{{table}}/{{created}}", json={{}}).status_code == 422
    assert client.patch(f"/api/{{table}}/{{created}}", json={{field: [1]}}).status_code == 422
    if table in REQUIRED:
        for blank in ("", None):
            refused = client.patch(f"/api/{{table}}/{{created}}", json={{REQUIRED[table][0]: blank}})
            assert refused.json()["detail"] == "missing: " + REQUIRED[table][0]
    assert client.patch(f"/api/{{table}}/{{created + 1000}}", json=change).status_code == 404
    assert client.patch(f"/api/{{table}}/{{2**64}}", json=change).status_code == 422

"""
# The optional fields of the records an API changes, one line each as above.
BACKEND_API_CLEAR_TEST = """

OPTIONAL: dict[str, list[str]] = {{}}
{lines}

@pytest.mark.parametrize("table", sorted(OPTIONAL))
def test_an_optional_field_given_null_is_cleared(client, table):
    cleared, *kept = OPTIONAL[table]
    created = client.post(f"/api/{{table}}", json=RECORDS[table]).json()["id"]
    changed = client.patch(f"/api/{{table}}/{{created}}", json={{cleared: None}})
    assert changed.json() == {{"updated": created}}
    listed = next(row for row in client.get(f"/api/{{table}}").json() if row["id"] == created)
    assert listed[cleared] is None
    assert {{name: listed[name] for name in kept}} == {{name: RECORDS[table][name] for name in kept}}
"""
# The records an API deletes, one line each as above.
BACKEND_API_DELETE_TEST = """

DELETES: set[str] = set()
{lines}

@pytest.mark.parametrize("table", sorted(DELETES))
def test_a_deleted_record_is_gone(client, table):
    created = client.post(f"/api/{{table}}", json=RECORDS[table]).json()["id"]
    assert client.delete(f"/api/{{table}}/{{created}}").json() == {{"deleted": created}}
    assert created not in [row["id"] for row in client.get(f"/api/{{table}}").json()]
    assert client.delete(f"/api/{{table}}/{{created}}").status_code == 404
    assert client.delete(f"/api/{{table}}/{{2**64}}").status_code == 422  # no id SQLite holds
"""
BACKEND_DB = '''"""The backend's database: SQLite at $DATABASE_PATH (default `app.db` in the working
directory), kept up to date on first use from the project's schema, `database/schema.sql`
(written for PostgreSQL), and its migrations, `database/migrations/*.sql`."""

import os
import pathlib
import re
import sqlite3

# The project's schema: `database/schema.sql` in the nearest folder above that has one (a second
# backend may sit deeper, in src/<task>).
SCHEMA = next(
    (
        up / "database" / "schema.sql"
        for up in pathlib.Path(__file__).resolve().parents
        if (up / "database" / "schema.sql").is_file()
    ),
    pathlib.Path("database", "schema.sql"),
)
MIGRATIONS = SCHEMA.parent / "migrations"
# The PostgreSQL the schema uses, as SQLite's; every statement made idempotent.
SQLITE_SCHEMA = (
    (r"\\bSERIAL PRIMARY KEY\\b", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    (r"\\bTIMESTAMPTZ\\b", "TIMESTAMP"),
    (r"\\bnow\\(\\)", "CURRENT_TIMESTAMP"),
    (r"\\bCREATE (TABLE|INDEX) (?!IF NOT EXISTS)", r"CREATE \\1 IF NOT EXISTS "),
)
_made: set[str] = set()


def sqlite_schema(sql: str) -> str:
    for pattern, replacement in SQLITE_SCHEMA:
        sql = re.sub(pattern, replacement, sql, flags=re.IGNORECASE)
    return sql


def statements(sql: str):
    """The statements of a script, one at a time (a `;` inside a string does not end one)."""
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


def migrate(db: sqlite3.Connection) -> None:
    """The schema's tables (a table new since the database was made, too), then each migration the
    database has not had, recorded in `schema_migrations`. A new database has every column of the
    schema already: its migrations are only recorded."""
    new = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0
    db.executescript(sqlite_schema(SCHEMA.read_text()))
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
    done = {row[0] for row in db.execute("SELECT name FROM schema_migrations")}
    for migration in sorted(MIGRATIONS.glob("*.sql")) if MIGRATIONS.is_dir() else []:
        if migration.name in done:
            continue
        for statement in statements(sqlite_schema(migration.read_text())) if not new else ():
            try:
                db.execute(statement)
            except sqlite3.OperationalError as exc:
                # A column of a table made above from today's schema is there already.
                if "duplicate column" not in str(exc):
                    raise
        db.execute("INSERT OR IGNORE INTO schema_migrations (name) VALUES (?)", (migration.name,))
    db.commit()


def connect() -> sqlite3.Connection:
    path = os.environ.get("DATABASE_PATH", "app.db")
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    if path not in _made and SCHEMA.is_file():
        migrate(db)
        _made.add(path)
    return db


def get_db():
    """A request's connection (a FastAPI dependency), closed once the request is answered."""
    db = connect()
    try:
        yield db
    finally:
        db.close()
'''
# `{accounts}`: the accounts module's imports, where the project has accounts; `{validation}`: the
# validation checks its routes use; `{path}` and `{one_id}`: where a route takes a record's id.
BACKEND_HEAD = """\
from fastapi import APIRouter, Depends, FastAPI, HTTPException{path}, Query
from fastapi.responses import JSONResponse

{accounts}from .db import get_db
{validation}
app = FastAPI(title="Generated API")
router = APIRouter(prefix="/api")
PAGE = 100  # the rows a list answers at most; ?offset= gives the next ones
{one_id}

def anywhere(text: str) -> str:
    # A LIKE pattern for names holding `text`: a % or _ typed in a search is that character, not a
    # wildcard ("100%" finds "100% juice", not every name starting "100").
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


@app.exception_handler(UnicodeEncodeError)
def text_no_utf8_holds(request, exc):
    # JSON may carry a lone surrogate, which no UTF-8 (nor the database) holds: bad input, not a crash.
    return JSONResponse({{"detail": "text must be UTF-8 (a lone surrogate is not)"}}, status_code=422)


@router.get("/search")
def search(q: str, {user}db=Depends(get_db)):
"""
# A record's id in its path: SQLite's ids end at 2**63 - 1, and a larger one overflowed (a 500).
BACKEND_ONE_ID = "ONE_ID = Path(ge=1, le=2**63 - 1)  # a record's id\n"
BACKEND_ACCOUNTS_IMPORTS = "from .accounts import current_user\nfrom .accounts import router as accounts\n"
# With accounts, a route takes the signed-in user (`{user}`) and lists only their rows (`{own}`).
BACKEND_LIST = """

@router.get("/{table}")
def list_{table}(offset: int = Query(0, ge=0, le=2**31), {user}db=Depends(get_db)):
    query = "SELECT {listed} FROM {table}{own} ORDER BY id LIMIT ? OFFSET ?"
{listing}"""
BACKEND_LISTED = """\
    return [dict(row) for row in db.execute(query, ({own_args}PAGE, offset)).fetchall()]
"""
# SQLite keeps true and false as 1 and 0: listed as JSON's true and false again.
BACKEND_LISTED_FLAGS = """\
    rows = [dict(row) for row in db.execute(query, ({own_args}PAGE, offset)).fetchall()]
    for row in rows:
        row.update({{name: bool(row[name]) for name in {flags!r}}})
    return rows
"""
# The checks a record's POST and PATCH share: values a column holds, true or false for a yes-or-no one.
BACKEND_UNFIT_CHECK = """\
    unfit = unfit_fields(item, {taken!r})
    if unfit:
        raise HTTPException(422, "not text or a number: " + ", ".join(unfit))
    long = too_long(item, {taken!r})
    if long:
        raise HTTPException(422, "longer than 10,000 characters: " + ", ".join(long))
"""
BACKEND_FLAG_CHECK = """\
    unflagged = not_true_or_false(item, {flags!r})
    if unflagged:
        raise HTTPException(422, "not true or false: " + ", ".join(unflagged))
"""
BACKEND_CREATE = """

@router.post("/{table}")
def create_{table}(item: dict, {user}db=Depends(get_db)):
    missing = missing_fields(item, {fields!r})
    if missing:
        raise HTTPException(422, "missing: " + ", ".join(missing))
{checks}    cursor = db.execute(
        "INSERT INTO {table} ({inserted}) VALUES ({values})",
        ({args},),
    )
    db.commit()
    return {{"id": cursor.lastrowid}}
"""
# A JSON merge patch (RFC 7396): a field left out keeps its value, a field given null is cleared
# (one the row must have is refused), the rest are set.
BACKEND_UPDATE = """

@router.patch("/{table}/{{item_id}}")
def update_{table}(item: dict, item_id: int = ONE_ID, {user}db=Depends(get_db)):
    if not any(name in item for name in {taken!r}):
        raise HTTPException(422, "nothing to change: give one of " + ", ".join({taken!r}))
    blank = [name for name in {kept!r} if name in item and item[name] in (None, "")]
    if blank:
        raise HTTPException(422, "missing: " + ", ".join(blank))
{checks}    cursor = db.execute(
        "UPDATE {table} SET {changes} WHERE id = ?{own}",
        ({args}),
    )
    db.commit()
    if cursor.rowcount == 0:
        raise HTTPException(404, f"no such record{of_yours}: {{item_id}}")
    return {{"updated": item_id}}
"""
BACKEND_DELETE = """

@router.delete("/{table}/{{item_id}}")
def delete_{table}(item_id: int = ONE_ID, {user}db=Depends(get_db)):
    cursor = db.execute("DELETE FROM {table} WHERE id = ?{own}", ({args}))
    db.commit()
    if cursor.rowcount == 0:
        raise HTTPException(404, f"no such record{of_yours}: {{item_id}}")
    return {{"deleted": item_id}}
"""
BACKEND_COUNT_CHECK = """\
    if {given}not valid_count(item.get("{column}")):
        raise HTTPException(422, "{column} must be a whole number from 1 to 50")
"""


BACKEND_README = """\
# Backend

A FastAPI app serving `GET` and `POST` on `/api/<record>` for the project's records over SQLite
and, where its contract has them, `PATCH` and `DELETE` on `/api/<record>/<id>` (with accounts, of
a user's own records alone). Its tables are made on first use from the project's schema
(`database/schema.sql` in the nearest folder above that has one); `$DATABASE_PATH` picks the file
(default `app.db` here).

    pip install -r requirements.txt
    uvicorn app.main:app --port 8001    # API docs at http://localhost:8001/docs
    python -m pytest -q                 # its tests (pytest installed)
"""


def backend_files(
    tables: list[str],
    sql_injection: bool = False,
    *,
    columns: dict[str, dict[str, str]] | None = None,
    endpoints: list[dict] | None = None,
    flaws: set[str] | frozenset = frozenset(),
    accounts: bool = False,
) -> list[dict]:
    """A FastAPI app whose router (prefix /api) serves the contract's endpoints over SQLite, a search,
    a validation module and its tests; with `accounts`, the accounts module too, and each record
    its signed-in user's (listed to them alone, unless everyone sees it: `PUBLIC_RECORDS`).
    Flaws: "sql_injection" formats the search query, "failing_gate" ships an off-by-one in the
    validation that its tests catch."""
    columns = columns or {t: table_columns(t) for t in tables}
    if endpoints is None:
        endpoints = [{"method": m, "path": f"/api/{t}"} for t in tables for m in ("GET", "POST")]
    first = tables[0] if tables else "items"
    own = accounts and "user_id" in columns.get(first, {}) and first not in PUBLIC_RECORDS
    if sql_injection:
        query = f"db.execute(\"SELECT id, name FROM {first} WHERE name LIKE '%%%s%%'\" % q)"
    else:
        query = searched_names(first, own)
    search = f"    rows = {query}.fetchall()\n"
    routes = []
    # What the API test posts, the fields each record requires or has as yes or no, and the records it
    # changes and deletes.
    records, needed, flagged, edited, removed = {}, {}, {}, [], []
    for table in tables:
        served = {e["method"] for e in endpoints if e["path"] == f"/api/{table}"}
        kinds = columns.get(table, {})
        names = [c for c in kinds if c != "id"]
        fields = [c for c in names if c not in ("user_id", "created_at")]
        required = [c for c in fields if required_column(kinds[c])]
        owned = accounts and "user_id" in names
        user = "user: int = Depends(current_user), " if accounts else ""
        private = owned and table not in PUBLIC_RECORDS  # listed to its user alone
        flags = [c for c in fields if sql_type(kinds[c]) == "boolean"]
        if "GET" in served:
            own_args = "user, " if private else ""
            routes.append(
                BACKEND_LIST.format(
                    table=table,
                    listed=", ".join(["id", *fields]),
                    user=user if private else "",
                    own=" WHERE user_id = ?" if private else "",
                    listing=(
                        BACKEND_LISTED_FLAGS.format(own_args=own_args, flags=flags)
                        if flags
                        else BACKEND_LISTED.format(own_args=own_args)
                    ),
                )
            )
        # Without accounts, a row is the user_id the payload names (by default the first user's).
        named_user = ["user_id"] if "user_id" in names and not accounts else []
        shared_checks = BACKEND_UNFIT_CHECK.format(taken=[*fields, *named_user])
        shared_checks += BACKEND_FLAG_CHECK.format(flags=flags) if flags else ""
        if {"GET", "POST"} <= served:
            records[table] = sample_record(table, {c: kinds[c] for c in fields})
        if "POST" in served and required:
            needed[table] = required
        if {"GET", "POST"} <= served and flags:
            flagged[table] = flags
        deleted = serves_one_record(endpoints, table, "DELETE")
        updated = serves_one_record(endpoints, table, "PATCH")
        if {"GET", "POST"} <= served and deleted:
            removed.append(table)
        if {"GET", "POST"} <= served and updated:
            edited.append(table)
        counts = [c for c in required if c in ("party_size", "rating")]
        if "POST" in served:
            inserted = ["user_id", *fields] if "user_id" in names else fields
            args = ", ".join(_payload_value(c, required, accounts, flags) for c in inserted)
            routes.append(
                BACKEND_CREATE.format(
                    table=table,
                    user=user,
                    fields=required,
                    checks=shared_checks
                    + "".join(BACKEND_COUNT_CHECK.format(given="", column=c) for c in counts),
                    inserted=", ".join(inserted),
                    values=", ".join("?" for _ in inserted),
                    args=args,
                )
            )
        if updated:
            given = 'item.get("{column}") is not None and '
            routes.append(
                BACKEND_UPDATE.format(
                    table=table,
                    user=user,
                    kept=[c for c in fields if "NOT NULL" in kinds[c].upper()],
                    taken=fields,
                    checks=shared_checks
                    + "".join(
                        BACKEND_COUNT_CHECK.format(given=given.format(column=c), column=c) for c in counts
                    ),
                    changes=", ".join(f"{c} = CASE WHEN ? THEN ? ELSE {c} END" for c in fields),
                    own=" AND user_id = ?" if owned else "",
                    args=", ".join(
                        [
                            *(f'"{c}" in item, item.get("{c}")' for c in fields),
                            "item_id",
                            *(["user"] if owned else []),
                        ]
                    ),
                    of_yours=" of yours" if owned else "",
                )
            )
        if deleted:
            routes.append(
                BACKEND_DELETE.format(
                    table=table,
                    user=user,
                    own=" AND user_id = ?" if owned else "",
                    args="item_id, user" if owned else "item_id,",
                    of_yours=" of yours" if owned else "",
                )
            )
    checks = [name for name in VALIDATION_CHECKS if f"{name}(" in "".join(routes)]
    one_record = "ONE_ID" in "".join(routes)
    head = BACKEND_HEAD.format(
        path=", Path" if one_record else "",
        one_id=BACKEND_ONE_ID if one_record else "",
        validation=f"from .validation import {', '.join(checks)}\n" if checks else "",
        accounts=BACKEND_ACCOUNTS_IMPORTS if accounts else "",
        user="user: int = Depends(current_user), " if own else "",
    )
    main = head + search + "    return [dict(row) for row in rows]\n" + "".join(routes)
    main += "\n\napp.include_router(router)\n" + ("app.include_router(accounts)\n" if accounts else "")
    low = "1 <" if "failing_gate" in flaws else "1 <="
    return [
        {"path": "backend/app/main.py", "content": main},
        {"path": "backend/app/__init__.py", "content": ""},
        {"path": "backend/app/db.py", "content": BACKEND_DB},
        {"path": "backend/app/validation.py", "content": VALIDATION.format(low=low)},
        *(backend_accounts_files(records, edited, removed) if accounts else []),
        {"path": "backend/tests/test_validation.py", "content": VALIDATION_TEST},
        *(
            [
                {
                    "path": "backend/tests/test_api.py",
                    "content": api_test(
                        records, needed, flagged, edited, removed, "" if sql_injection else first
                    ),
                }
            ]
            if records or needed
            else []
        ),
        {"path": "backend/requirements.txt", "content": "fastapi==0.115.0\nuvicorn==0.30.0\n"},
        {"path": "backend/.gitignore", "content": "app.db\n__pycache__/\n.pytest_cache/\n"},
        {"path": "backend/README.md", "content": BACKEND_README},
    ]


def serves_one_record(endpoints: list[dict], table: str, method: str) -> bool:
    """Whether the contract has `method` on one record of the table (`/api/<table>/{id}`)."""
    return any(
        e["method"] == method and paths_match(segments(e["path"]), ("api", table, PARAM)) for e in endpoints
    )


def api_test(
    records: dict[str, dict],
    required: dict[str, list[str]],
    flags: dict[str, list[str]],
    edited: list[str],
    removed: list[str],
    searched: str = "",
) -> str:
    lines = [f"RECORDS[{table!r}] = {record!r}\n" for table, record in records.items()]
    lines += [f"REQUIRED[{table!r}] = {fields!r}\n" for table, fields in required.items()]
    flagged = "".join(f"FLAGS[{table!r}] = {names!r}\n" for table, names in flags.items())
    changed = "".join(f"UPDATES.add({table!r})\n" for table in edited)
    optional = {
        table: [name for name in records[table] if name not in required.get(table, []) + flags.get(table, [])]
        for table in edited
    }
    cleared = "".join(f"OPTIONAL[{table!r}] = {names!r}\n" for table, names in optional.items() if names)
    deleted = "".join(f"DELETES.add({table!r})\n" for table in removed)
    return BACKEND_API_TEST.format(
        lines="".join(lines),
        signed_in_client=SIGNED_IN_CLIENT,
        search_test=BACKEND_API_SEARCH_TEST.format(table=searched)
        if "name" in records.get(searched, {})
        else "",
        flag_test=BACKEND_API_FLAG_TEST.format(lines=flagged) if flags else "",
        update_test=(BACKEND_API_UPDATE_TEST.format(lines=changed) if edited else "")
        + (BACKEND_API_CLEAR_TEST.format(lines=cleared) if cleared else ""),
        delete_test=BACKEND_API_DELETE_TEST.format(lines=deleted) if removed else "",
    )


def _payload_value(column: str, required: list[str], accounts: bool = False, flags: list[str] = ()) -> str:
    """The expression of the backend's insert for a column: the payload's value (optional ones may be
    left out, a yes-or-no one then false); the signed-in user's id, or without accounts the first
    user, for whose a row is."""
    if column == "user_id":
        return "user" if accounts else 'item.get("user_id", 1)'
    if column in flags:
        return f'bool(item.get("{column}"))'
    return f'item["{column}"]' if column in required else f'item.get("{column}")'


def has_conflict_markers(content: str) -> bool:
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in content.splitlines())


def one_side(content: str, keep: set[str]) -> str:
    """A file with git's conflict markers, keeping the lines of the `keep` sides ("ours", "theirs")."""
    out, side = [], None
    for line in content.splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            side = "ours"
        elif side and line.startswith("||||||| "):
            side = "base"
        elif side and line.rstrip("\n") == "=======":
            side = "theirs"
        elif side and line.startswith(">>>>>>> "):
            side = None
        elif side is None or side in keep:
            out.append(line)
    return "".join(out)


def union_of_sides(content: str, path: str = "") -> str:
    """A file with git's conflict markers resolved the offline way: both sides kept, ours first. For
    Python, when the lines of both sides together do not parse, ours whole plus the top-level
    functions only theirs defines, so the resolution is code that compiles; for SQL, statement by
    statement (`union_of_sql`): the lines of two statements interleaved are no statement."""
    both = one_side(content, {"ours", "theirs"})
    if path.endswith(".sql"):
        return union_of_sql(one_side(content, {"ours"}), one_side(content, {"theirs"}))
    if not path.endswith(".py"):
        return both
    try:
        ast.parse(both)
        return both
    except SyntaxError:
        pass
    ours, theirs = one_side(content, {"ours"}), one_side(content, {"theirs"})
    try:
        ours_tree, theirs_tree = ast.parse(ours), ast.parse(theirs)
    except SyntaxError:
        return ours
    defined = {node.name for node in ours_tree.body if isinstance(node, ast.FunctionDef)}
    lines = theirs.splitlines(keepends=True)
    added = [
        "".join(lines[min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1 : node.end_lineno])
        for node in theirs_tree.body
        if isinstance(node, ast.FunctionDef) and node.name not in defined
    ]
    tail = "\n\napp.include_router(router)\n"
    body = ours[: -len(tail)] if ours.endswith(tail) else ours
    merged = body.rstrip("\n") + "".join(f"\n\n\n{block.rstrip()}" for block in added) + "\n"
    return merged + (tail if ours.endswith(tail) else "")


# What a schema statement creates ("table", "bookings"): the same object from both sides is kept once.
SQL_CREATES = re.compile(
    r"create\s+(?:unique\s+)?(table|index|view)\s+(?:if\s+not\s+exists\s+)?\"?([\w.]+)", re.IGNORECASE
)


def union_of_sql(ours: str, theirs: str) -> str:
    """Ours whole, then theirs' statements that create what ours does not, or that ours lacks."""

    def statements(text: str) -> list[str]:
        return [part.strip() for part in text.split(";") if part.strip()]

    def creates(statement: str) -> tuple[str, str] | str:
        found = SQL_CREATES.match(statement)
        return (found.group(1).lower(), found.group(2).lower()) if found else " ".join(statement.split())

    kept = statements(ours)
    known = {creates(statement) for statement in kept}
    kept += [statement for statement in statements(theirs) if creates(statement) not in known]
    return "".join(f"{statement};\n\n" for statement in kept).rstrip("\n") + "\n"


def resolve_merge(meta: dict) -> dict:
    files = [
        {"path": f["path"], "content": union_of_sides(f["content"], f["path"])}
        for f in meta.get("target_files", [])
        if has_conflict_markers(f.get("content", ""))
    ]
    return {
        "summary": f"Resolved the merge conflict in {', '.join(f['path'] for f in files)}: kept both sides.",
        "files": files,
        "findings": [],
    }


def searched_names(table: str, own: bool) -> str:
    """The search's `db.execute(…)` call: a page of the table's rows whose name holds `q` as typed
    (`anywhere` makes its % and _ literal), the signed-in user's alone where rows are their own."""
    mine = "user_id = ? AND " if own else ""
    query = f"SELECT id, name FROM {table} WHERE {mine}name LIKE ? ESCAPE '!' ORDER BY id LIMIT ?"
    return f'db.execute(\n        "{query}",\n        ({"user, " if own else ""}anywhere(q), PAGE),\n    )'


def remediate_python(source: str) -> str:
    """Rewrite the template's injectable query into a parameterised one."""
    return re.sub(
        r"db\.execute\(\"SELECT id, name FROM (\w+) WHERE name LIKE '%%%s%%'\" % q\)",
        lambda found: searched_names(found[1], own=False),
        source,
    )


def audit(meta: dict, flaws: set[str]) -> dict:
    findings = []
    audited = []
    for dep in meta.get("dependencies", []):
        for item in dep.get("files", []):
            audited.append(item["path"])
            for number, line in enumerate(item["content"].splitlines(), start=1):
                if re.search(r"execute\(\s*[\"'].*%s.*[\"']\s*%", line):
                    findings.append(
                        {
                            "severity": "critical",
                            "title": "SQL injection possible in the search",
                            "file": item["path"],
                            "line": number,
                            "recommendation": "Use a parameterised query instead of string formatting.",
                        }
                    )
                if "shell=True" in line:
                    findings.append(
                        {
                            "severity": "high",
                            "title": "Command injection through shell=True",
                            "file": item["path"],
                            "line": number,
                            "recommendation": "Pass an argument list without a shell.",
                        }
                    )
    findings.append(
        {
            "severity": "info",
            "title": "Rate limiting recommended on payment endpoints",
            "file": None,
            "line": None,
            "recommendation": "Add a per-client rate limit middleware.",
        }
    )
    summary = (
        f"Audited {len(audited)} files (OWASP top 10, injection, XSS, CSRF): {len(findings) - 1} issues."
    )
    return {"summary": summary, "files": [], "findings": findings}


def schema(meta: dict, flaws: set[str]) -> dict:
    """The contract's tables as PostgreSQL, with an index on every foreign key. Flaws:
    "missing_fk_index" leaves the indexes out, "missing_column" the first table's alphabetically
    first column beyond the common ones (bookings.party_size; alphabetically, because PostgreSQL's
    jsonb does not keep the contract's key order)."""
    declared = {t["name"]: t["columns"] for t in (meta.get("contract") or {}).get("tables", [])}
    # The users first (every record refers to them), then the records, then accounts' own tokens.
    tables = {
        "users": declared.get("users") or table_columns("users"),
        **contract_tables(meta),
        **{name: declared[name] for name in ACCOUNT_TABLES if name in declared and name != "users"},
    }
    revision = meta.get("kind") == "revision"
    index_fks = revision or "missing_fk_index" not in flaws
    parts, indexes = [], []
    dropped = "missing_column" not in flaws
    for table, columns in tables.items():
        kept = dict(columns)
        extra = sorted(c for c in kept if c not in ("id", "user_id", "name", "created_at"))
        if not dropped and table not in ACCOUNT_TABLES and extra:
            del kept[extra[0]]
            dropped = True
        body = ",\n".join(f"    {column} {kind}" for column, kind in kept.items())
        parts.append(f"CREATE TABLE {table} (\n{body}\n);")
        indexes += [
            f"CREATE INDEX {table}_{column}_idx ON {table} ({column});"
            for column, kind in kept.items()
            if index_fks and "REFERENCES" in kind.upper()
        ]
    sql = "\n\n".join(parts + indexes) + "\n"
    summary = f"Schema with {len(parts)} tables" + (
        f" and {len(indexes)} {'index' if len(indexes) == 1 else 'indexes'}." if indexes else "."
    )
    files = [{"path": "database/schema.sql", "content": sql}]
    migration = schema_migration(tables, meta.get("existing_sql") or {})
    if migration is not None:
        files.append(migration)
        summary += f" Migration {migration['path'].rsplit('/', 1)[-1]}: {migration['adds']}."
        del migration["adds"]
    files = in_owned_folder(files, "database", meta.get("owned"))
    return {"summary": summary, "files": files, "findings": []}


MIGRATION = """\
-- Brings a database made from an earlier database/schema.sql up to this one (PostgreSQL; the
-- backend's db.py applies it to SQLite once, recorded in schema_migrations).
{statements}"""
MIGRATION_NUMBER = re.compile(r"^database/migrations/(\d+)_[^/]*\.sql$")


def schema_migration(tables: dict[str, dict[str, str]], existing_sql: dict[str, str]) -> dict | None:
    """The migration that adds to the tables of the project's schema (its `.sql` files as the task
    found them: `existing_sql`, path → text) the columns these tables have beyond them, as
    `database/migrations/<number>_<what>.sql` after the last one there; None when none is missing.
    An added column is nullable (the rows there have no value for it) and keeps its foreign key,
    with an index. A password hash added to the users (accounts begin) disowns the rows of no user."""
    before = read_schema({p: text for p, text in existing_sql.items() if p.startswith("database/")})
    statements, added = [], []
    for table, columns in tables.items():
        there = before.table(table)
        if there is None:
            continue  # a new table: schema.sql makes it, on a database made before as well
        for column, kind in columns.items():
            if there.has_column(column):
                continue
            loose = re.sub(r"\s+(NOT NULL|UNIQUE|PRIMARY KEY)\b", "", kind, flags=re.I).strip()
            statements.append(f"ALTER TABLE {table} ADD COLUMN {column} {loose};")
            if "REFERENCES" in kind.upper():
                statements.append(f"CREATE INDEX IF NOT EXISTS {table}_{column}_idx ON {table} ({column});")
            added.append(f"{table}.{column}")
    if not added:
        return None
    # Accounts begin: a row made before them (for the placeholder user 1 no account is) becomes no
    # one's, kept but listed to no user, rather than the first account's to sign up.
    disowned = [
        table
        for table, columns in tables.items()
        if f"users.{PASSWORD_HASH}" in added
        and "user_id" in columns
        and table not in ACCOUNT_TABLES
        and before.table(table) is not None  # a table new with accounts has no rows from before
    ]
    statements += [
        f"UPDATE {table} SET user_id = 0 WHERE user_id NOT IN (SELECT id FROM users);" for table in disowned
    ]
    numbers = [int(m.group(1)) for p in existing_sql if (m := MIGRATION_NUMBER.match(p))]
    by_table: dict[str, list[str]] = {}
    for name in added:
        table, column = name.split(".", 1)
        by_table.setdefault(table, []).append(column)
    what = "_".join(f"{table}_{'_'.join(columns)}" for table, columns in by_table.items())[:48].strip("_")
    return {
        "path": f"database/migrations/{max(numbers, default=0) + 1:04d}_{what}.sql",
        "content": MIGRATION.format(statements="\n".join(statements) + "\n"),
        "adds": "adds "
        + ", ".join(added)
        + (f"; the {', '.join(disowned)} made before accounts become no one's" if disowned else ""),
    }


# ---------------------------------------------------------------- the tool loop


def _call(number: int, name: str, arguments: dict) -> ToolCall:
    return ToolCall(f"offline_{number}_{name}", name, arguments, json.dumps(arguments))


def _test_path(files: list[dict], owned: list[str] | None = None) -> str:
    """The agent's test of its files, in its own folder: the first the contract gives it, else the
    top folder of its first file (in `src`, named after that file)."""
    if owned:
        folder = owned[0]
    else:
        first = files[0]["path"].split("/")
        folder = first[0] if len(first) > 1 else ""
    slug = folder or files[0]["path"].rsplit(".", 1)[0]
    if folder == "src":
        # `src` holds the modules of many tasks and follow-ups: each keeps a test of its own.
        slug = files[0]["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = f"test_{re.sub(r'[^a-z0-9_]', '_', slug.lower())}_files.py"
    return f"{folder}/tests/{name}" if folder else f"tests/{name}"


def _test_command(test_path: str) -> str:
    """The agent runs the whole suite of the folder its test is in, as the integration gate will: the
    tests it wrote and those already there. A test at the top runs alone."""
    folder = test_path.rsplit("/tests/", 1)[0] if "/tests/" in test_path else ""
    if not folder:
        return f"python3 -m pytest -q {shlex.quote(test_path)}"
    return f"cd {shlex.quote(folder)} && python3 -m pytest -q"


def _test_source(paths: list[str], flawed: bool, test_path: str = "tests/test_files.py") -> str:
    expected = [*paths, "README.md"] if flawed else paths  # the flaw: a file nobody wrote
    depth = test_path.count("/")  # folders between the test and the project root
    return textwrap.dedent(f"""\
        \"\"\"The agent's own check of its output: every file is there, every Python file parses.\"\"\"

        import ast
        import pathlib

        ROOT = pathlib.Path(__file__).resolve().parents[{depth}]
        FILES = {expected!r}


        def test_every_file_is_written():
            for path in FILES:
                assert (ROOT / path).is_file(), path


        def test_python_files_parse():
            for path in FILES:
                if path.endswith(".py"):
                    ast.parse((ROOT / path).read_text(), filename=path)
        """)


def _tests_first(spec: ModelSpec, request: LLMRequest) -> bool:
    return request.role == "codegen" and request.meta.get("kind", "plan") != "remediation"


def planned_turns(spec: ModelSpec, request: LLMRequest) -> int:
    explore = int(spec.options.get("explore_turns", 0))
    if not _tests_first(spec, request):
        return explore + 2
    return explore + (5 if "failing_test" in spec.options.get("flaws", []) else 3)


def next_step(spec: ModelSpec, request: LLMRequest, answer_text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """The next turn of an offline agent whose whole answer is `answer_text`, from the conversation
    so far: write (or list), run the tests, fix a failing test once, finish."""
    try:
        answer = json.loads(answer_text)
    except ValueError:
        return answer_text, ()  # a malformed reply stays one: the loop says so
    number = 1 + sum(1 for m in request.history if m.role == "assistant")
    called = [c for m in request.history for c in m.tool_calls]
    listing = next(
        (r.content for m in request.history for r in m.tool_results if r.name == "list_files"), None
    )
    files = mounted(answer.get("files", []), listing)
    owned = request.meta.get("owned")
    finish = _call(number, "finish", {"summary": answer["summary"], "findings": answer.get("findings", [])})
    # Option explore_turns: look around that many turns first (benchmarks: a loop of a given length).
    if number <= int(spec.options.get("explore_turns", 0)):
        return "Looking at the workspace.", (_call(number, "list_files", {}),)
    if request.role == "security":
        if not any(c.name == "list_files" for c in called):
            return "Listing the files to audit.", (_call(number, "list_files", {}),)
        return "Done.", (finish,)
    if not any(c.name == "write_file" for c in called):
        if listing is None and mounted(files, "") is not files:
            # A new component is mounted beside the project's own: look at those first.
            return "Looking for the components the app mounts.", (_call(number, "list_files", {}),)
        writes = [_call(number, "write_file", {"path": f["path"], "content": f["content"]}) for f in files]
        if _tests_first(spec, request) and files:
            flawed = "failing_test" in spec.options.get("flaws", [])
            source = _test_source([f["path"] for f in files], flawed, _test_path(files, owned))
            writes.append(_call(number, "write_file", {"path": _test_path(files, owned), "content": source}))
        return "Writing the files.", tuple(writes) or (finish,)
    runs = [c for c in called if c.name == "run"]
    last = request.history[-1].tool_results[-1] if request.history[-1].tool_results else None
    own_test = _test_path(files, owned) if files else None
    wrote_tests = any(c.name == "write_file" and c.arguments["path"] == own_test for c in called)
    if wrote_tests and (not runs or (last is not None and last.name == "write_file")):
        return "Running the tests.", (_call(number, "run", {"command": _test_command(own_test)}),)
    if last is not None and last.name == "run" and len(runs) == 1 and not last.is_error:
        outcome = json.loads(last.content)
        if outcome["exit_code"] != 0:
            paths = [f["path"] for f in files]
            fixed = _test_source(paths, flawed=False, test_path=_test_path(files, owned))
            return "The test expects a file nobody wrote; fixing the test.", (
                _call(number, "write_file", {"path": _test_path(files, owned), "content": fixed}),
            )
    return "Done.", (finish,)
