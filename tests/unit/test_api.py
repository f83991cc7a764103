"""REST API: auth, client isolation, bad input (no broker: messages go out on commit only)."""

import json

import pytest

from executions.models import Event, Execution
from tests.factories import make_client, make_execution, make_pools

URL = "/api/execute-parallel"
VALID = {
    "message": "Build a restaurant website with booking",
    "sessionKey": "user123",
    "project": "delhi-palace",
    "force_parallel": True,
}


@pytest.fixture
def acme(db):
    make_pools()
    return make_client("acme")


def post(client, key, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", HTTP_X_API_KEY=key, **extra)


def test_start_returns_202_with_the_seeds_fields(client, acme):
    response = post(client, acme[1], VALID)
    assert response.status_code == 202
    body = response.json()
    assert body["execution_id"].startswith("exec_user123_")
    assert body["status"] == "planning" and body["tasks"] == [] and "estimated_duration_sec" in body
    execution = Execution.objects.get(pk=body["execution_id"])
    assert execution.force_parallel and execution.project == "delhi-palace"
    assert list(Event.objects.filter(execution=execution).values_list("type", flat=True)) == [
        "execution.created"
    ]


def test_bearer_auth_works_and_missing_or_wrong_keys_are_401(client, acme):
    response = client.post(
        URL, data=json.dumps(VALID), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {acme[1]}"
    )
    assert response.status_code == 202
    assert client.post(URL, data=json.dumps(VALID), content_type="application/json").status_code == 401
    assert post(client, "oc_wrong", VALID).status_code == 401


def test_a_revoked_key_or_inactive_client_is_refused(client, acme):
    from django.utils import timezone

    from executions.models import ApiKey

    ApiKey.objects.update(revoked_at=timezone.now())
    assert post(client, acme[1], VALID).status_code == 401


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ("{not json", 400, ""),
        ({"sessionKey": "u"}, 422, "message"),
        ({"message": "   "}, 422, "message"),
        ({"message": "x" * 1_000_000}, 422, "longer than"),
        ({"message": "Build it", "mode": "turbo"}, 422, "mode"),
        ({"message": "Build it", "budget_usd": -5}, 422, "budget_usd"),
        ({"message": ["Build", "it"]}, 422, "message"),
        ({"message": "Build it", "force_parallel": "very"}, 422, "force_parallel"),
        ({"message": "Build it", "sessionKey": "a b/../c"}, 422, "sessionKey"),
        # A misspelt field is refused by name, never ignored (here: no budget at all).
        ({"message": "Build it", "budget": 5}, 422, "budget: not a field of this request"),
        ([1, 2, 3], 422, ""),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_stores_nothing(client, acme, body, status, needle):
    response = post(client, acme[1], body)
    assert response.status_code == status, response.content
    assert needle in response.json()["detail"]
    assert Execution.objects.count() == 0 and Event.objects.count() == 0


def test_someone_elses_execution_is_a_404_everywhere(client, acme):
    other, _ = make_client("globex")
    theirs = make_execution(other, [{"key": "task_1"}])
    key = acme[1]
    for method, path in [
        ("get", f"/api/execution/{theirs.pk}"),
        ("get", f"/api/execution/{theirs.pk}/events"),
        ("post", f"/api/execution/{theirs.pk}/cancel"),
        ("post", f"/api/execution/{theirs.pk}/retry"),
    ]:
        response = getattr(client, method)(path, HTTP_X_API_KEY=key)
        assert response.status_code == 404, path
    listing = client.get("/api/executions", HTTP_X_API_KEY=key).json()
    assert listing["count"] == 0
    assert Execution.objects.get(pk=theirs.pk).status == "executing"


def test_a_request_with_a_nul_character_is_a_422_and_stores_nothing(client, acme):
    # PostgreSQL's text columns refuse U+0000: said plainly, not a 500 from the database.
    for nul in ({"message": "Build \x00 a shop"}, {"callback_url": "https://public.example/ho\x00ok"}):
        response = post(client, acme[1], dict(VALID, **nul))
        assert response.status_code == 422
        assert response.json() == {"detail": "the request contains a NUL character (U+0000)"}
    assert not Execution.objects.exists()


def test_numbers_past_the_databases_integers_are_answered_not_crashed_on(client, acme):
    owner, key = acme
    execution = make_execution(owner, [{"key": "task_1"}])
    huge = 10**20
    events = client.get(f"/api/execution/{execution.pk}/events?after={huge}", HTTP_X_API_KEY=key)
    assert (events.status_code, events.json()["events"]) == (200, [])
    attempt = client.get(f"/api/execution/{execution.pk}/tasks/task_1/attempts/{huge}", HTTP_X_API_KEY=key)
    assert (attempt.status_code, attempt.json()) == (404, {"detail": "attempt not found"})


def test_unknown_api_paths_and_methods_answer_in_json(client, acme):
    key = acme[1]
    for path in ("/api/nonexistent", "/api/execution/..%2F..%2Fetc/diff"):
        response = client.get(path, HTTP_X_API_KEY=key)
        assert (response.status_code, response.json()) == (404, {"detail": "not found"}), path
    wrong_method = client.delete(URL, HTTP_X_API_KEY=key)
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "method not allowed"})
    assert wrong_method["Allow"] == "POST"
    # The API's own 404s keep their words; pages outside the API keep Django's.
    missing = client.get("/api/execution/exec_nope", HTTP_X_API_KEY=key)
    assert missing.json() == {"detail": "execution not found"}
    assert "application/json" not in client.get("/nonexistent")["Content-Type"]


def test_detail_list_and_events(client, acme):
    execution = make_execution(
        acme[0], [{"key": "task_1"}, {"key": "task_2", "pool": "security", "blocked_by": ["task_1"]}]
    )
    from executions import events

    events.emit(execution.pk, "task.queued", task_key="task_1")
    events.emit(execution.pk, "task.started", task_key="task_1")
    detail = client.get(f"/api/execution/{execution.pk}", HTTP_X_API_KEY=acme[1]).json()
    assert detail["status"] == "executing" and detail["cost"] == "$0.00"
    assert [t["id"] for t in detail["tasks"]] == ["task_1", "task_2"]
    assert detail["tasks"][1]["blocked_by"] == ["task_1"]
    page = client.get("/api/executions?limit=1&status=executing", HTTP_X_API_KEY=acme[1]).json()
    assert page["count"] == 1 and page["items"][0]["tasks_total"] == 2
    assert client.get("/api/executions?status=bogus", HTTP_X_API_KEY=acme[1]).status_code == 422
    log = client.get(f"/api/execution/{execution.pk}/events?after=1", HTTP_X_API_KEY=acme[1]).json()
    assert [e["seq"] for e in log["events"]] == [2] and log["last_seq"] == 2


@pytest.mark.parametrize("query", ["limit=106383773684289938500091904", "offset=10000000000000", "limit=0"])
def test_a_page_number_out_of_range_is_refused_naming_it(client, acme, query):
    response = client.get(f"/api/executions?{query}", HTTP_X_API_KEY=acme[1])
    assert response.status_code == 422
    assert query.split("=")[0] in str(response.json()["detail"])


def test_cancel_then_cancel_again_is_a_conflict(client, acme):
    execution = make_execution(acme[0], [{"key": "task_1"}])
    response = client.post(f"/api/execution/{execution.pk}/cancel", HTTP_X_API_KEY=acme[1])
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/api/execution/{execution.pk}/cancel", HTTP_X_API_KEY=acme[1]).status_code == 409
    assert client.post(f"/api/execution/{execution.pk}/retry", HTTP_X_API_KEY=acme[1]).status_code == 409


def test_pools_endpoint_shows_load_and_provider(client, acme):
    make_execution(acme[0], [{"key": "a", "status": "running"}, {"key": "b", "status": "queued"}])
    pools = {p["name"]: p for p in client.get("/api/pools", HTTP_X_API_KEY=acme[1]).json()}
    assert pools["codegen"]["running"] == 1 and pools["codegen"]["queued"] == 1
    assert pools["codegen"]["provider"] == "offline"


def test_with_redis_unreachable_the_api_answers_503_to_retry(client, acme, settings, tmp_path):
    settings.CACHES = {  # a real Redis client, to a socket nothing listens on
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"unix://{tmp_path}/nothing.sock",
        }
    }
    response = client.get("/api/executions", HTTP_X_API_KEY=acme[1])
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "retry" in response.json()["detail"]
