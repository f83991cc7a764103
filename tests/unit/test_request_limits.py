"""Limits on what a client may ask: a request too long is refused before anything is stored, and
`?wait=` beyond the client's allowance of waiting requests answers at once."""

import json
from types import SimpleNamespace

import pytest
from django.core.cache import cache

from executions import api
from executions.models import Event, Execution
from executions.services import RequestRefused, execution_create
from tests.factories import make_client, make_pools

URL = "/api/execute-parallel"


@pytest.fixture
def acme(db):
    make_pools()
    return make_client("acme")


def post(client, key, message: str, query: str = ""):
    return client.post(
        URL + query,
        data=json.dumps({"message": message, "sessionKey": "limits"}),
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )


def test_a_message_over_the_limit_is_a_422_and_stores_nothing(client, acme, settings):
    settings.OPENCLAW_MAX_MESSAGE_CHARS = 40
    response = post(client, acme[1], "Build a booking site " * 2)  # 42 characters
    assert response.status_code == 422
    assert "longer than 40 characters" in response.json()["detail"]
    assert Execution.objects.count() == 0 and Event.objects.count() == 0


def test_a_message_at_the_limit_is_accepted(client, acme, settings):
    settings.OPENCLAW_MAX_MESSAGE_CHARS = 40
    response = post(client, acme[1], "x" * 40)
    assert response.status_code == 202
    assert Execution.objects.filter(pk=response.json()["execution_id"], message="x" * 40).exists()


@pytest.mark.parametrize(
    "message,reason",
    [("x" * 41, "longer than 40"), ("", "empty"), (" \n\t ", "empty")],
    ids=["too-long", "empty", "blank"],
)
def test_execution_create_refuses_before_storing_anything(
    acme, settings, django_capture_on_commit_callbacks, message, reason
):
    settings.OPENCLAW_MAX_MESSAGE_CHARS = 40
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RequestRefused, match=reason):
        execution_create(client=acme[0], message=message, session_key="limits")
    assert Execution.objects.count() == 0 and Event.objects.count() == 0
    assert callbacks == []  # no planning message either


class Clock:
    """`executions.api`'s time: counts the polls' sleeps without spending them."""

    def __init__(self):
        self.now, self.sleeps = 0.0, 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


@pytest.mark.parametrize("allowed,waited", [(0, 0.0), (1, 5.0)])
def test_wait_beyond_the_clients_allowance_answers_at_once_while_planning(
    client, acme, settings, monkeypatch, allowed, waited
):
    """No worker plans here: a request that may wait polls until its deadline (5 s of a fake
    clock); one over the allowance is answered without a single poll, still planning."""
    settings.OPENCLAW_MAX_WAITS_PER_CLIENT = allowed
    clock = Clock()
    monkeypatch.setattr(api, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))

    response = post(client, acme[1], "Build a booking site", query="?wait=5")

    assert response.status_code == 202 and response.json()["status"] == "planning"
    assert Execution.objects.get(pk=response.json()["execution_id"]).status == "planning"
    assert clock.now == pytest.approx(waited, abs=0.1)
    assert (clock.sleeps > 0) == (waited > 0)
    assert cache.get(f"plan-waits:{acme[0].pk}") == 0  # the waiting slot is given back
