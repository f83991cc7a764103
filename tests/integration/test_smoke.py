from tests.conftest import configure, wait_for_status


def test_restaurant_request_end_to_end(workers, client_and_key):
    from executions.services import execution_create

    configure(latency=0.3)
    client, _ = client_and_key
    execution = execution_create(
        client=client,
        message="Build a restaurant website with online booking and secure payments",
        session_key="user123",
    )
    done = wait_for_status(execution.pk, {"completed", "partial", "failed"}, timeout=40)
    assert done.status == "completed"
