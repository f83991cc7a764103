"""Yes-or-no fields: a todo's `done`, and what a follow-up adds as a checkbox, a flag or a toggle."""

import pytest

from pools import offline
from pools.contracts.check import check_tree
from pools.contracts.derive import FLAG, added_fields, contract_for

AREAS = {"task_1": "frontend", "task_2": "backend", "task_3": "database"}


@pytest.mark.parametrize(
    ("request_text", "fields"),
    [
        ("Add a done checkbox to todos", ("todos", {"done": FLAG})),
        ("Add an urgent flag to tasks", ("tasks", {"urgent": FLAG})),
        ("Add a paid check box and a notes field to bookings", ("bookings", {"paid": FLAG, "notes": "TEXT"})),
        ("Add a vip toggle to customers", ("customers", {"vip": FLAG})),
        # Not flags: a field named so, or a box that is no checkbox.
        ("Add phone and email to the booking form", ("bookings", {"phone": "TEXT", "email": "TEXT"})),
        ("Add a gift box to orders", ("orders", {"gift": "TEXT"})),
    ],
)
def test_what_a_follow_up_adds_as_yes_or_no(request_text, fields):
    assert added_fields(request_text) == fields


def test_a_todo_is_done_or_not_in_every_layer():
    request = "Build a todo list app"
    contract = contract_for(request, AREAS)
    [post] = [e for e in contract["endpoints"] if (e["method"], e["path"]) == ("POST", "/api/todos")]
    assert post["request"]["done"] == "boolean"
    meta = {"request": request, "contract": contract}
    files = {
        f["path"]: f["content"]
        for f in [
            *offline.codegen({**meta, "description": f"Build Next.js frontend: {request}"}, set())["files"],
            *offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())["files"],
            *offline.schema(meta, set())["files"],
        ]
    }

    assert "done BOOLEAN NOT NULL DEFAULT false" in files["database/schema.sql"]
    main = files["backend/app/main.py"]
    assert "row.update({name: bool(row[name]) for name in ['done']})" in main
    assert 'bool(item.get("done"))' in main  # left out, a todo is not done
    assert "unflagged = not_true_or_false(item, ['done'])" in main
    assert "FLAGS['todos'] = ['done']" in files["backend/tests/test_api.py"]
    page = files["frontend/pages/todos.tsx"]
    assert '<label><input name="done" type="checkbox" /> done</label>' in page
    assert 'input.type === "checkbox"\n        ? input.checked' in page  # sent as true or false
    assert "listed([row.name, when(row.due_at)])" in page  # shown apart, not as "true" or "false"
    report = check_tree(contract, files, {}, {})
    assert report.mismatches == [] and report.passed == report.checks > 0


def test_a_record_without_yes_or_no_fields_has_none_of_their_code():
    request = "Build a restaurant website with online booking"
    contract = contract_for(request, AREAS)
    meta = {"request": request, "contract": contract}
    backend = offline.codegen({**meta, "description": f"Build FastAPI backend: {request}"}, set())["files"]
    files = {f["path"]: f["content"] for f in backend}

    assert "not_true_or_false(item" not in files["backend/app/main.py"]
    assert "row.update(" not in files["backend/app/main.py"]
    assert "FLAGS" not in files["backend/tests/test_api.py"]
