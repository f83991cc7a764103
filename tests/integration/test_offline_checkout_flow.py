"""The offline agents' checkout flow runs for real: its end-to-end test drives the backend they
wrote on the schema they wrote, in the agents' sandbox (real bubblewrap), and catches a schema
that does not fit the backend."""

import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from pools import offline, sandbox
from pools.contracts.derive import CHECKOUT_FLOW, contract_for

pytestmark = pytest.mark.skipif(
    not sandbox.availability()[0] and not os.environ.get("CI"),
    reason=f"no sandbox here: {sandbox.availability()[1]}",
)

REQUEST = "Build an online shop with a cart and checkout with card payments"


@pytest.fixture
def workspace() -> Path:
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder)


def shop(workspace: Path) -> dict:
    """The offline agents' backend, schema and checkout flow of one plan, written to `workspace`."""
    areas = {"task_2": "backend", "task_3": "database", "task_5": "other"}
    contract = contract_for(REQUEST, areas)
    meta = {"request": REQUEST, "contract": contract}
    backend = offline.codegen(
        {**meta, "description": f"Build FastAPI backend with API endpoints: {REQUEST}"}, set()
    )
    schema = offline.schema({**meta, "description": "Design database schema"}, set())
    flow = offline.codegen(
        {**meta, "description": f"{CHECKOUT_FLOW}: {REQUEST}", "owned": ["src/task_5"]}, set()
    )
    for item in backend["files"] + schema["files"] + flow["files"]:
        path = workspace / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    return flow


def test_the_checkout_flow_runs_through_the_backend_on_the_schema(workspace):
    flow = shop(workspace)
    assert [f["path"] for f in flow["files"]] == [
        "src/task_5/checkout_flow.py",
        "src/task_5/tests/test_checkout_end_to_end.py",
    ]
    assert "carts → orders → payments" in flow["summary"]

    result = sandbox.run(workspace, "cd src && python3 -m pytest -q -p no:cacheprovider", timeout_sec=60)

    assert result.exit_code == 0, result.output
    assert "2 passed" in result.output


def test_a_schema_without_a_column_the_backend_writes_fails_the_flow(workspace):
    shop(workspace)
    schema = workspace / "database" / "schema.sql"
    schema.write_text(schema.read_text().replace("    total_cents INTEGER NOT NULL,\n", ""))

    result = sandbox.run(workspace, "cd src && python3 -m pytest -q -p no:cacheprovider", timeout_sec=60)

    assert result.exit_code == 1, result.output
    assert "table orders has no column named total_cents" in result.output
    assert "2 failed" in result.output
