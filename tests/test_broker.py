"""The Redis broker's delay queues: consumed only for the queues that take delayed messages."""

import dramatiq
import pytest
from dramatiq import Worker
from django.conf import settings

from openclaw_site.broker import UndelayedQueuesRedisBroker


@pytest.fixture
def broker(redis_server):
    broker = UndelayedQueuesRedisBroker(url=settings.REDIS_URL, namespace="openclaw-broker-test",
                                        delayed_queues=["slack"])
    yield broker
    broker.close()


def test_a_worker_consumes_delay_queues_of_the_delayed_queues_only(broker):
    for queue in ("pool.codegen", "control", "slack"):
        broker.declare_queue(queue)
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.declare_queue("pool.analytics")  # a pool added while the worker runs
        assert set(worker.consumers) == {"pool.codegen", "control", "slack", "slack.DQ", "pool.analytics"}
    finally:
        worker.stop()


def test_a_delayed_message_is_refused_where_nothing_would_consume_it_and_delivered_where_it_is(broker):
    ran = []
    pool_actor = dramatiq.actor(lambda: None, actor_name="pool_job", queue_name="pool.codegen", broker=broker)
    slack_actor = dramatiq.actor(lambda: ran.append("slack"), actor_name="slack_job", queue_name="slack",
                                 broker=broker, max_retries=0)
    with pytest.raises(ValueError, match="takes no delayed messages"):
        pool_actor.send_with_options(delay=10)
    pool_actor.send()  # undelayed: as usual
    slack_actor.send_with_options(delay=10)
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("slack", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert ran == ["slack"]


def test_background_queues_are_polled_at_their_own_pace_and_the_others_at_the_workers(redis_server):
    broker = UndelayedQueuesRedisBroker(url=settings.REDIS_URL, namespace="openclaw-broker-test",
                                        delayed_queues=["slack"], background_queues=["slack"], background_poll_ms=500)
    try:
        for queue in ("pool.codegen", "control", "slack"):
            broker.declare_queue(queue)
        worker = Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            timeouts = {name: thread.consumer.timeout for name, thread in worker.consumers.items()}
        finally:
            worker.stop()
    finally:
        broker.close()
    assert timeouts == {"pool.codegen": 50, "control": 50, "slack": 500, "slack.DQ": 500}
