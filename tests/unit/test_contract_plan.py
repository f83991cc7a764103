"""The contract in the plan: validated like the plan, repaired once, else the deterministic one."""

import copy
import json

import pytest

from executions.pm_coordinator import PoolLimits, decompose
from pools import llm
from pools.contracts.contract import ContractInvalid, amend, project_part, validate_contract
from pools.contracts.derive import area_of, contract_for
from pools.llm import ModelSpec
from pools.prompts import agent_prompt, loop_prompt

POOLS = {
    "codegen": PoolLimits(300, role="codegen"),
    "security": PoolLimits(300, role="security"),
    "database": PoolLimits(180, role="database"),
}
OFFLINE = ModelSpec(name="offline", provider="offline", model="m")
TASKS = [
    {"id": "task_1", "pool": "codegen", "description": "Build Next.js frontend"},
    {"id": "task_2", "pool": "codegen", "description": "Build FastAPI backend", "soft_deps": ["task_3"]},
    {"id": "task_3", "pool": "database", "description": "Design the schema"},
]
CONTRACT = {
    "endpoints": [
        {
            "method": "post",
            "path": "/api/bookings",
            "request": {"party_size": "integer"},
            "response": {"id": "integer"},
        },
        {"method": "GET", "path": "/api/bookings/{id}"},
    ],
    "tables": [{"name": "bookings", "columns": {"id": "integer primary key", "party_size": "integer"}}],
    "ownership": {"task_1": ["frontend/"], "task_2": ["backend"], "task_3": ["db/"]},
}


def plan(contract=None) -> str:
    body = {"tasks": TASKS}
    if contract is not None:
        body["contract"] = contract
    return json.dumps(body)


def fake_replies(monkeypatch, replies: list[str]) -> list:
    calls = []

    def complete(spec, request, on_progress=None):
        calls.append(request)
        return llm.Completion(text=replies[len(calls) - 1], input_tokens=10, output_tokens=20)

    monkeypatch.setattr(llm, "complete", complete)
    return calls


def test_a_valid_contract_is_normalised():
    contract, notes = validate_contract({**CONTRACT, "extra": 1}, {"task_1", "task_2", "task_3"})
    assert contract["endpoints"][0]["method"] == "POST"
    assert contract["endpoints"][1] == {
        "method": "GET",
        "path": "/api/bookings/{id}",
        "request": {},
        "response": {},
    }
    assert contract["ownership"] == {"task_1": ["frontend"], "task_2": ["backend"], "task_3": ["db"]}
    assert notes == ["contract: unknown key 'extra' dropped"]


@pytest.mark.parametrize(
    "change,error",
    [
        (lambda c: c["ownership"].update({"task_9": ["x/"]}), "ownership names unknown task 'task_9'"),
        (
            lambda c: c["endpoints"].append({"method": "POST", "path": "/api/bookings/"}),
            "duplicate endpoint POST",
        ),
        (
            lambda c: c["endpoints"].append({"method": "GET", "path": "/api/bookings/:bid"}),
            "duplicate endpoint GET",
        ),
        (lambda c: c["endpoints"].append({"method": "FETCH", "path": "/x"}), "method 'FETCH' is not one of"),
        (lambda c: c["endpoints"].append({"method": "GET", "path": "api/x"}), "must start with '/'"),
        (lambda c: c["endpoints"].append({"method": "GET", "path": "/a b"}), "not a plain URL path"),
        (
            lambda c: c["tables"].append({"name": "Bookings", "columns": {"id": "int"}}),
            "duplicate table Bookings",
        ),
        (
            lambda c: c["tables"].append({"name": "x; DROP", "columns": {"id": "int"}}),
            "is not an SQL identifier",
        ),
        (
            lambda c: c["tables"].append({"name": "empty", "columns": {}}),
            "columns must be a non-empty object",
        ),
        (lambda c: c["ownership"].update({"task_1": ["../etc"]}), "is not a relative path"),
        (lambda c: c.update({"endpoints": "all of them"}), 'contract "endpoints" must be a list'),
    ],
)
def test_invalid_contracts_are_refused_with_every_error(change, error):
    contract = copy.deepcopy(CONTRACT)
    change(contract)
    with pytest.raises(ContractInvalid) as raised:
        validate_contract(contract, {"task_1", "task_2", "task_3"})
    assert any(error in e for e in raised.value.errors), raised.value.errors


def test_a_valid_plan_and_contract_are_kept(monkeypatch):
    fake_replies(monkeypatch, [plan(CONTRACT)])
    result = decompose("Build a restaurant website", OFFLINE, POOLS, max_tasks=50, timeout=10)
    assert (result.source, result.contract_source) == ("model", "model")
    assert result.contract["tables"][0]["name"] == "bookings"


def test_a_contract_naming_unknown_tasks_is_repaired_once_with_the_errors(monkeypatch):
    bad = {**CONTRACT, "ownership": {"task_7": ["frontend/"]}}
    calls = fake_replies(monkeypatch, [plan(bad), plan(CONTRACT)])
    result = decompose("Build a restaurant website", OFFLINE, POOLS, max_tasks=50, timeout=10)
    assert "contract: ownership names unknown task 'task_7'" in calls[1].prompt
    assert (result.source, result.contract_source) == ("repaired", "repaired")
    assert result.contract["ownership"]["task_1"] == ["frontend"]


def test_a_contract_still_invalid_gives_way_to_the_deterministic_contract_for_the_models_tasks(monkeypatch):
    duplicate = {**CONTRACT, "endpoints": CONTRACT["endpoints"] + [CONTRACT["endpoints"][0]]}
    fake_replies(monkeypatch, [plan(duplicate), plan(duplicate)])
    result = decompose(
        "Build a restaurant website with online booking", OFFLINE, POOLS, max_tasks=50, timeout=10
    )
    assert [t["id"] for t in result.tasks] == ["task_1", "task_2", "task_3"]  # the model's tasks
    assert (result.source, result.contract_source) == ("repaired", "fallback")
    assert any(
        n.startswith("model contract rejected: duplicate endpoint POST /api/bookings") for n in result.notes
    )
    assert result.contract == contract_for(
        "Build a restaurant website with online booking",
        {"task_1": "frontend", "task_2": "backend", "task_3": "database"},
    )
    assert result.contract["ownership"] == {
        "task_1": ["frontend"],
        "task_2": ["backend"],
        "task_3": ["database"],
    }


def test_a_plan_without_a_contract_gets_the_deterministic_one_without_a_repair(monkeypatch):
    calls = fake_replies(monkeypatch, [plan()])
    result = decompose("Build a restaurant website", OFFLINE, POOLS, max_tasks=50, timeout=10)
    assert len(calls) == 1 and result.contract_source == "fallback"
    assert {"GET", "POST"} == {e["method"] for e in result.contract["endpoints"]}
    assert "the plan has no contract: the deterministic planner's contract is used" in result.notes


def test_non_json_twice_falls_back_to_the_deterministic_plan_and_its_contract(monkeypatch):
    fake_replies(monkeypatch, ["no plan here", '{"tasks": [], "contract": "x"}'])
    request = "Build a restaurant website with online booking and secure payments"
    result = decompose(request, OFFLINE, POOLS, max_tasks=50, timeout=10)
    assert (result.source, result.contract_source) == ("fallback", "fallback")
    paths = {e["path"] for e in result.contract["endpoints"]}
    assert paths == {"/api/restaurants", "/api/bookings", "/api/payments"}
    assert [t["name"] for t in result.contract["tables"]] == ["users", "restaurants", "bookings", "payments"]
    # Each task owns its area; the audit is not restricted (it may hand back fixed files).
    assert result.contract["ownership"] == {
        "task_1": ["frontend"],
        "task_2": ["backend"],
        "task_3": ["database"],
    }


def test_the_offline_pm_answers_with_the_deterministic_plan_and_contract():
    result = decompose(
        "Build a restaurant website with online booking", OFFLINE, POOLS, max_tasks=50, timeout=10
    )
    assert (result.source, result.contract_source) == ("model", "model")
    assert result.contract["ownership"]["task_3"] == ["database"]


def test_every_agent_gets_the_contract_fenced_as_data_and_its_own_paths():
    task = {"key": "task_1", "pool": "codegen", "description": "Build the frontend", "context": {}}
    task |= {"contract": CONTRACT, "owned": ["frontend"]}
    for prompt in (
        loop_prompt(request="r", task=task, role="codegen", dependencies=[]),
        agent_prompt(request="r", task=task, dependencies=[]),
    ):
        assert "The plan's contract" in prompt and '"/api/bookings/{id}"' in prompt
        contract_part = prompt.split("The plan's contract", 1)[1]
        assert contract_part.index("<<<CLIENT_DATA") < contract_part.index('"/api/bookings/{id}"')
        assert "You write only under: frontend." in prompt


def test_a_single_reply_follow_up_is_shown_the_projects_files_as_data():
    task = {"key": "task_1", "pool": "codegen", "description": "Add a dark mode toggle", "context": {}}
    files = [("frontend/pages/index.tsx", 412), ("backend/app/main.py", 1900)]

    prompt = agent_prompt(request="r", task=task, dependencies=[], existing_files=files)

    listing = prompt.split("This task changes an existing project.", 1)[1]
    assert "a file you write replaces the one at its path" in listing
    assert listing.index("<<<CLIENT_DATA") < listing.index("frontend/pages/index.tsx  412")
    assert "backend/app/main.py  1900" in listing
    assert "existing project" not in agent_prompt(request="r", task=task, dependencies=[])


def test_a_fix_prompt_quotes_the_evidence_and_the_failing_gate_output():
    evidence = {
        "check": "call-undeclared",
        "file": "frontend/pages/bookings.tsx",
        "line": 8,
        "found": "calls GET /api/reservations",
        "expected": "a declared endpoint, e.g. GET /api/bookings",
    }
    gate = {"command": "cd backend && python3 -m pytest -q", "exit_code": 1, "passed": 2, "failed": 1}
    gate["output_tail"] = "FAILED tests/test_validation.py::test_one_is_a_valid_count"
    task = {
        "key": "task_1_iface1",
        "pool": "codegen",
        "description": "Make task_1 agree",
        "context": {"evidence": [evidence], "gate": gate, "round": 1},
    }
    prompt = loop_prompt(request="r", task=task, role="codegen", dependencies=[])
    assert (
        "- frontend/pages/bookings.tsx:8: found calls GET /api/reservations; "
        "the contract expects a declared endpoint, e.g. GET /api/bookings"
    ) in prompt
    assert (
        "ran `cd backend && python3 -m pytest -q` on the merged project and it failed (exit code 1" in prompt
    )
    assert "FAILED tests/test_validation.py::test_one_is_a_valid_count" in prompt
    assert '"round": 1' in prompt and '"evidence"' not in prompt  # shown apart, not as raw JSON


STORED = {
    "endpoints": [
        {"method": "GET", "path": "/api/menu_items", "request": {}, "response": {"items": "array"}},
        {"method": "POST", "path": "/api/bookings/:id", "request": {"old": "string"}, "response": {}},
    ],
    "tables": [
        {"name": "menu_items", "columns": {"id": "SERIAL PRIMARY KEY", "name": "TEXT"}},
        {"name": "Bookings", "columns": {"id": "SERIAL PRIMARY KEY"}},
    ],
}


def test_an_amendment_replaces_what_it_redefines_adds_the_rest_and_drops_nothing():
    amendment = {
        "endpoints": [
            {
                "method": "POST",
                "path": "/api/bookings/{booking_id}",
                "request": {"new": "int"},
                "response": {},
            },
            {"method": "GET", "path": "/api/reviews", "request": {}, "response": {}},
        ],
        "tables": [{"name": "bookings", "columns": {"id": "SERIAL PRIMARY KEY", "party_size": "INTEGER"}}],
        "ownership": {"task_1": ["backend"]},
    }
    merged = amend(STORED, amendment)
    assert [(e["method"], e["path"]) for e in merged["endpoints"]] == [
        ("GET", "/api/menu_items"),
        ("POST", "/api/bookings/{booking_id}"),  # replaced in place: the same endpoint
        ("GET", "/api/reviews"),
    ]
    assert merged["endpoints"][1]["request"] == {"new": "int"}
    assert [t["name"] for t in merged["tables"]] == ["menu_items", "bookings"]
    assert merged["tables"][1]["columns"] == {"id": "SERIAL PRIMARY KEY", "party_size": "INTEGER"}
    assert merged["ownership"] == {"task_1": ["backend"]}
    assert amend(STORED, {}) == {**STORED, "ownership": {}}
    assert project_part(merged) == {"endpoints": merged["endpoints"], "tables": merged["tables"]}


def test_a_follow_ups_pm_sees_the_stored_contract_and_its_plan_amends_it(monkeypatch):
    calls = fake_replies(monkeypatch, [plan(CONTRACT)])
    result = decompose(
        "Add bookings",
        OFFLINE,
        POOLS,
        max_tasks=50,
        timeout=10,
        existing_contract={**STORED, "ownership": {}},
    )
    prompt = calls[0].prompt
    assert "The project already has this contract" in prompt and '"/api/menu_items"' in prompt
    assert "Keep it: your plan's contract lists only what you add or change" in prompt
    paths = [(e["method"], e["path"]) for e in result.contract["endpoints"]]
    # POST /api/bookings/:id is not POST /api/bookings: kept. The model's bookings table replaces
    # the stored one.
    assert paths == [
        ("GET", "/api/menu_items"),
        ("POST", "/api/bookings/:id"),
        ("POST", "/api/bookings"),
        ("GET", "/api/bookings/{id}"),
    ]
    assert [t["name"] for t in result.contract["tables"]] == ["menu_items", "bookings"]
    assert result.contract["tables"][1]["columns"]["party_size"] == "integer"
    assert result.contract["ownership"]["task_2"] == ["backend"]
    assert [e["path"] for e in result.amendment["endpoints"]] == ["/api/bookings", "/api/bookings/{id}"]
    assert "ownership" not in result.amendment


def test_a_follow_ups_invalid_amendment_falls_back_to_the_deterministic_one_on_top_of_the_stored(monkeypatch):
    duplicate = {**CONTRACT, "endpoints": CONTRACT["endpoints"] + [CONTRACT["endpoints"][0]]}
    fake_replies(monkeypatch, [plan(duplicate), plan(duplicate)])
    result = decompose("Add reviews", OFFLINE, POOLS, max_tasks=50, timeout=10, existing_contract=STORED)
    assert result.contract_source == "fallback"
    paths = [e["path"] for e in result.contract["endpoints"]]
    assert paths[:2] == ["/api/menu_items", "/api/bookings/:id"] and "/api/reviews" in paths
    assert {t["name"] for t in result.contract["tables"]} == {"menu_items", "Bookings", "users", "reviews"}


def test_the_offline_planner_amends_the_stored_contract_too():
    result = decompose(
        "Build a FastAPI backend for reviews",
        OFFLINE,
        POOLS,
        max_tasks=50,
        timeout=10,
        existing_contract=STORED,
    )
    paths = [(e["method"], e["path"]) for e in result.contract["endpoints"]]
    assert paths[:2] == [("GET", "/api/menu_items"), ("POST", "/api/bookings/:id")]
    assert ("GET", "/api/reviews") in paths and ("POST", "/api/reviews") in paths


RESTAURANT_FILES = [
    ("frontend/pages/bookings.tsx", 900),
    ("backend/app/main.py", 2400),
    ("database/schema.sql", 700),
    ("README.md", 120),
]


def test_a_follow_up_adding_a_new_kind_of_record_grows_every_layer_the_project_has():
    result = decompose(
        "Add a reviews page where diners rate their meal",
        OFFLINE,
        POOLS,
        max_tasks=50,
        timeout=10,
        existing_files=RESTAURANT_FILES,
        existing_contract=STORED,
    )
    areas = {t["id"]: area_of(t["description"], POOLS[t["pool"]].role) for t in result.tasks}
    assert sorted(areas.values()) == ["backend", "database", "frontend"]
    assert {folder for [folder] in result.contract["ownership"].values()} == {
        "frontend",
        "backend",
        "database",
    }
    paths = [(e["method"], e["path"]) for e in result.contract["endpoints"]]
    assert ("GET", "/api/reviews") in paths and ("POST", "/api/reviews") in paths
    reviews = next(t for t in result.contract["tables"] if t["name"] == "reviews")
    assert reviews["columns"]["rating"] == "INTEGER NOT NULL"


def test_a_follow_up_on_what_the_project_has_or_on_a_project_without_layers_stays_one_task():
    for request, files in (
        ("Add a reviews page", [("src/app.py", 100)]),  # no layer folders
        ("Fix the menu page's prices", RESTAURANT_FILES),  # menu_items is in the stored contract
        ("Add a dark mode toggle to the frontend", RESTAURANT_FILES),  # no kind of record
    ):
        result = decompose(
            request, OFFLINE, POOLS, max_tasks=50, timeout=10, existing_files=files, existing_contract=STORED
        )
        assert len(result.tasks) == 1, (request, result.tasks)


def test_a_tasks_area_is_the_first_part_its_description_names():
    quoted = ": REST API + frontend + security audit"
    assert area_of("Build FastAPI backend with API endpoints" + quoted, "codegen") == "backend"
    assert area_of("Build Next.js frontend" + quoted, "codegen") == "frontend"
    assert area_of("Build the UI for bookings", "codegen") == "frontend"
    assert area_of("Write the deployment notes", "codegen") == "other"
    assert area_of("Build the backend", "database") == "database"


def test_a_new_project_is_planned_as_new_though_its_stored_contract_is_an_empty_one():
    # A new project's stored contract is {} (the API passes the project's, empty): its plan still
    # gets what a new project gets, a placeholder to build to and a small app's whole contract.
    for existing in (None, {}, {"endpoints": [], "tables": []}):
        site = decompose(
            "Build a website for my bakery",
            OFFLINE,
            POOLS,
            max_tasks=50,
            timeout=10,
            existing_contract=existing,
        )
        assert [e["path"] for e in site.contract["endpoints"]] == ["/api/items", "/api/items"]
        form = decompose(
            "Build a contact form", OFFLINE, POOLS, max_tasks=50, timeout=10, existing_contract=existing
        )
        assert len(form.tasks) == 1 and {t["name"] for t in form.contract["tables"]} == {"users", "messages"}
    follow_up = decompose(
        "Build a contact form", OFFLINE, POOLS, max_tasks=50, timeout=10, existing_files=[("README.md", 9)]
    )
    assert follow_up.contract["tables"] == []  # a follow-up's single task builds no small app over it
