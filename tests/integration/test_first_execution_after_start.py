"""The first execution after the workers start reaches its models as promptly as any later one.

Fresh worker processes (two, as `make run` starts on two cores), every pool on a real provider's
SDK against the fake model server; the PM plans offline, so the first real model calls the workers
make are the fan-out's. A worker that loaded the SDKs on its first model need (over a second on a
2-core box, under the import lock) held the plan or the fan-out's calls that long; loaded at boot,
the calls follow the request in a fraction of that.
"""

import time

from executions.configuration import load_config
from executions.models import Task
from executions.services import execution_create
from tests.conftest import FAST_TIMINGS, wait_for_status
from tests.fakes.agency import AgencyReplies, agent_calls, seed_config_at
from tests.fakes.llm_server import FakeLLMServer
from tests.processes import Workers

KEY_ENV = "OPENCLAW_TEST_FAKE_LLM_API_KEY"
RESTAURANT = "Build a restaurant website with online booking and secure payments"
# Request → each first-layer task's model call, and the spread of those calls: about 0.1 s and
# tens of milliseconds when nothing loads late; the bounds leave room for a loaded CI box.
FIRST_CALL_WITHIN_SEC = 0.75
SPREAD_WITHIN_SEC = 0.5


def test_the_first_fan_out_after_a_start_calls_its_models_at_once(
    transactional_db, redis_server, client_and_key, settings
):
    client, _ = client_and_key
    env = {**FAST_TIMINGS, KEY_ENV: "sk-fake-123", "OPENCLAW_OFFLINE": "0"}
    with FakeLLMServer(default_reply=AgencyReplies([])) as server:
        load_config(seed_config_at(server, key_env=KEY_ENV, offline_pm=True), force=True)
        workers = Workers(8, env, processes=2, logs=settings.VAR_DIR / "test-logs").start()
        try:
            requested = time.monotonic()
            execution = execution_create(
                client=client, message=RESTAURANT, session_key="cold", mode="parallel"
            )
            done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=60)
        finally:
            workers.stop()
        calls = {description: at - requested for _, description, at in agent_calls(server.requests)}
    # The fake agents' minimal files do not implement the offline PM's contract, so the execution may
    # end partial after its fix rounds; what matters here is that every planned task was delivered.
    assert done.status in ("completed", "partial"), done.error
    planned = Task.objects.filter(execution=done, kind="plan")
    assert all(t.attempts.filter(status="succeeded").exists() for t in planned)

    first_layer = [t for t in planned if not t.blocked_by]
    assert len(first_layer) >= 3  # a fan-out: the restaurant's frontend, backend and schema
    after = {t.key: round(calls[t.description], 3) for t in first_layer}
    assert max(after.values()) < FIRST_CALL_WITHIN_SEC, after
    assert max(after.values()) - min(after.values()) < SPREAD_WITHIN_SEC, after
