"""The Redis broker's delay queues: consumed only for the queues that take delayed messages."""

import threading
import time
import uuid

import dramatiq
import pytest
from django.conf import settings
from dramatiq import Worker

from openclaw_site.broker import UndelayedQueuesRedisBroker
from tests.conftest import restart_redis


@pytest.fixture
def broker(redis_server):
    broker = UndelayedQueuesRedisBroker(
        url=settings.REDIS_URL, namespace="openclaw-broker-test", delayed_queues=["slack"]
    )
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
    slack_actor = dramatiq.actor(
        lambda: ran.append("slack"), actor_name="slack_job", queue_name="slack", broker=broker, max_retries=0
    )
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


@pytest.mark.parametrize("worker_timeout", [50, 1000])
def test_background_queues_are_polled_at_their_own_pace_and_the_others_at_the_workers(
    redis_server, worker_timeout
):
    broker = UndelayedQueuesRedisBroker(
        url=settings.REDIS_URL,
        namespace="openclaw-broker-test",
        delayed_queues=["slack"],
        background_queues=["slack"],
        background_poll_ms=500,
    )
    try:
        for queue in ("pool.codegen", "control", "slack"):
            broker.declare_queue(queue)
        worker = Worker(broker, worker_threads=1, worker_timeout=worker_timeout)
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while any(thread.consumer is None for thread in worker.consumers.values()):  # made by each thread
                assert time.monotonic() < deadline, "a consumer thread did not start"
                time.sleep(0.01)
            timeouts = {name: thread.consumer.timeout for name, thread in worker.consumers.items()}
        finally:
            worker.stop()
    finally:
        broker.close()
    assert timeouts == {
        "pool.codegen": worker_timeout,
        "control": worker_timeout,
        "slack": 500,
        "slack.DQ": 500,
    }


def broker_of_its_own(**options) -> UndelayedQueuesRedisBroker:
    """A broker on a namespace (and so a wake-up channel) of its own: another test's listener, still
    winding down, neither wakes its consumers nor passes for its listener."""
    return UndelayedQueuesRedisBroker(
        url=settings.REDIS_URL, namespace=f"openclaw-broker-test-{uuid.uuid4().hex[:8]}", **options
    )


def wait_for_wake_up_listener(broker):
    deadline = time.monotonic() + 10
    while broker.client.pubsub_numsub(broker.wakeups.channel)[0][1] < 1:
        assert time.monotonic() < deadline, "the wake-up listener did not subscribe"
        time.sleep(0.05)
    time.sleep(0.1)  # its wake-up of every queue on subscribing has been handled


@pytest.fixture
def wakeable(redis_server):
    """A consumer of an idle pool queue, as a worker's consumer thread drives it."""
    broker = broker_of_its_own(background_queues=["slack"])
    actor = dramatiq.actor(lambda: None, actor_name="wake_job", queue_name="pool.codegen", broker=broker)
    consumer = broker.consume("pool.codegen", prefetch=2, timeout=10_000)
    wait_for_wake_up_listener(broker)
    yield broker, actor, consumer
    broker.close()


def wait_then_send(consumer, actor, within_sec: float):
    """Let `consumer` find its queue empty and back off for 5–10 s, send a message, and return what
    the consumer yields next once its wait ends, or None if the wait did not end within `within_sec`."""
    consumer.misses = 30  # the longest backoff: only a wake-up ends it early
    woke = threading.Event()
    threading.Thread(target=lambda: (next(consumer), woke.set()), daemon=True).start()
    time.sleep(0.3)
    assert not woke.is_set(), "the consumer should be waiting on its empty queue"
    sent = actor.send()
    if not woke.wait(within_sec):
        return None
    received = next(consumer)  # the worker's loop asks again once the wait ends
    assert received is not None and received.message_id == sent.message_id
    consumer.ack(received)
    return received


def test_a_message_sent_to_an_idle_queue_ends_its_consumers_backoff(wakeable):
    _, actor, consumer = wakeable
    for _ in range(3):
        assert wait_then_send(consumer, actor, within_sec=1.0) is not None, (
            "the consumer slept out its backoff"
        )


def test_a_consumer_holding_all_it_may_prefetch_fetches_again_as_soon_as_one_is_acked(redis_server):
    broker = broker_of_its_own()
    try:
        actor = dramatiq.actor(lambda: None, actor_name="busy_job", queue_name="pool.codegen", broker=broker)
        consumer = broker.consume("pool.codegen", prefetch=1, timeout=10_000)
        wait_for_wake_up_listener(broker)
        first, second = actor.send(), actor.send()
        deadline = time.monotonic() + 10
        while broker.wakeups.generation("pool.codegen") < 2:  # both sends' wake-ups are behind us
            assert time.monotonic() < deadline, "the sends' wake-ups did not arrive"
            time.sleep(0.01)
        held = next(consumer)
        assert held.message_id == first.message_id
        consumer.misses = 30  # a backoff of 5–10 s, which only the ack should cut short
        woke = threading.Event()
        threading.Thread(target=lambda: (next(consumer), woke.set()), daemon=True).start()
        time.sleep(0.3)
        assert not woke.is_set(), "the consumer should be waiting: it holds all it may prefetch"
        consumer.ack(held)
        assert woke.wait(1.0), "the consumer slept out its backoff after the ack"
        assert next(consumer).message_id == second.message_id
    finally:
        broker.close()


def test_wake_ups_resume_after_redis_restarts(wakeable):
    broker, actor, consumer = wakeable
    assert wait_then_send(consumer, actor, within_sec=1.0) is not None
    restart_redis()
    wait_for_wake_up_listener(broker)
    assert wait_then_send(consumer, actor, within_sec=1.0) is not None


def test_background_queues_are_not_woken_and_closing_the_broker_stops_its_listener(redis_server):
    broker = broker_of_its_own(background_queues=["slack"])
    slack = dramatiq.actor(lambda: None, actor_name="slack_note", queue_name="slack", broker=broker)
    pool = dramatiq.actor(lambda: None, actor_name="pool_note", queue_name="pool.codegen", broker=broker)
    listener = broker.client.pubsub()
    listener.subscribe(broker.wakeups.channel)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    slack.send()
    pool.send()
    assert listener.get_message(timeout=1)["data"] == b"pool.codegen"
    assert listener.get_message(timeout=0.3) is None  # nothing for the slack queue
    listener.close()

    assert type(broker.consume("slack", timeout=50)).__name__ == "_RedisConsumer"
    broker.consume("pool.codegen", timeout=50)
    thread = broker.wakeups._listener
    assert thread.is_alive()
    broker.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_consumer_in_a_forked_process_starts_a_listener_of_its_own(redis_server):
    broker = broker_of_its_own()
    try:
        inherited = threading.Thread(target=lambda: None)  # what a fork leaves of the parent's listener
        inherited.start()
        inherited.join()
        broker.wakeups._listener = inherited
        broker.consume("pool.codegen", timeout=50)
        assert broker.wakeups._listener is not inherited and broker.wakeups._listener.is_alive()
    finally:
        broker.close()


def test_a_dispatchs_messages_go_out_in_one_pipeline_each_delivered_once_with_one_wake_up_a_queue(
    redis_server,
):
    broker = broker_of_its_own()
    ran = []
    lock = threading.Lock()

    def record(n):
        with lock:
            ran.append(n)

    actors = {
        queue: dramatiq.actor(record, actor_name=f"job_{queue[-1]}", queue_name=queue, broker=broker)
        for queue in ("pool.a", "pool.b")
    }
    listener = broker.client.pubsub()
    listener.subscribe(broker.wakeups.channel)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    batch = [actors["pool.a" if n % 3 else "pool.b"].message(n) for n in range(9)]
    commands = []
    with redis_server.monitor() as monitor:
        sent = broker.enqueue_many(batch)
        while len(commands) < 9 + 2:
            command = monitor.next_command()["command"]
            if command.startswith(("EVALSHA", "PUBLISH")):
                commands.append(command.split()[0])
    assert commands == ["EVALSHA"] * 9 + ["PUBLISH"] * 2
    assert len({m.options["redis_message_id"] for m in sent}) == 9
    woken = [listener.get_message(timeout=1)["data"] for _ in range(2)]
    assert sorted(woken) == [b"pool.a", b"pool.b"]
    listener.close()
    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        broker.join("pool.a", timeout=10_000)
        broker.join("pool.b", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    assert sorted(ran) == list(range(9))


def test_a_dispatchs_messages_are_enqueued_after_redis_forgot_the_script(redis_server):
    broker = broker_of_its_own()
    actor = dramatiq.actor(lambda n: None, actor_name="job_after_flush", queue_name="pool.a", broker=broker)
    broker.enqueue(actor.message(0))  # the dispatch script is loaded
    redis_server.script_flush()
    broker.enqueue_many([actor.message(1), actor.message(2)])
    try:
        assert sorted(
            m.args[0] for m in (dramatiq.Message.decode(raw) for raw in queued(broker, "pool.a"))
        ) == [
            0,
            1,
            2,
        ]
    finally:
        broker.close()


def queued(broker, queue_name: str) -> list[bytes]:
    """The messages waiting in a queue, as the Redis broker stores them."""
    ids = broker.client.lrange(f"{broker.namespace}:{queue_name}", 0, -1)
    return broker.client.hmget(f"{broker.namespace}:{queue_name}.msgs", ids) if ids else []
