"""A yes-or-no field of a generated project, in the real sandbox: a follow-up adding one to a record
with rows ("Add a paid checkbox to bookings") migrates the database they are in, the rows there
are listed as false, and the API keeps true and false apart from anything else."""

import json
import os
import shutil
import uuid

import pytest
from django.conf import settings

from pools import sandbox

from .test_generated_accounts import backend_tests, restaurant_then

PAID = "Add a paid checkbox to bookings"
AFTER = """\
import json
from fastapi.testclient import TestClient
from app.main import app
client = TestClient(app)
booking = {"name": "Lin", "party_size": 2, "starts_at": "2026-12-31T21:00", "paid": True}
added = client.post("/api/bookings", json=booking).status_code
refused = client.post("/api/bookings", json={**booking, "paid": "yes"}).json()
listed = {row["name"]: row["paid"] for row in client.get("/api/bookings").json()}
print(json.dumps({"added": added, "refused": refused, "listed": listed}))
"""

pytestmark = pytest.mark.skipif(
    not sandbox.availability()[0] and not os.environ.get("CI"),
    reason=f"no sandbox here: {sandbox.availability()[1]}",
)


def test_a_follow_up_adding_a_checkbox_lists_the_rows_there_as_false():
    folder = settings.VAR_DIR / "sandbox-tests" / uuid.uuid4().hex
    try:
        after = restaurant_then(folder, PAID, AFTER)

        migration = (folder / "database/migrations/0001_bookings_paid.sql").read_text()
        assert "ALTER TABLE bookings ADD COLUMN paid BOOLEAN DEFAULT false;" in migration
        assert after.exit_code == 0, after.output
        seen = json.loads(after.output.strip().splitlines()[-1])
        assert seen == {
            "added": 200,
            "refused": {"detail": "not true or false: paid"},
            "listed": {"Grace": False, "Lin": True},  # Grace's booking, made before, is not paid
        }
        assert '"listed": {"Grace": false, "Lin": true}' in after.output  # JSON's, not SQLite's 0 and 1
        # Its own tests, the yes-or-no field's among them, pass on it.
        assert "FLAGS['bookings'] = ['paid']" in (folder / "backend/tests/test_api.py").read_text()
        tests = backend_tests(folder)
        assert tests.exit_code == 0, tests.output
    finally:
        shutil.rmtree(folder)
