"""Sending work to the workers: the one place that names the actors and their queues.

Domain code sends a message by the actor's name and never imports an actor module (which would
import the domain back). The actors themselves live in `executions/actors.py` and
`bots/actors.py`, thin edges over the services. Call these from `transaction.on_commit`: a
message must never announce a state that was rolled back.
"""

import dramatiq
from dramatiq import get_broker

CONTROL_QUEUE = "control"
# Webhooks wait on clients' servers: a queue of their own, so a slow receiver delays no planning.
WEBHOOK_QUEUE = "webhooks"

PLAN_EXECUTION = "plan_execution"
AGGREGATE_EXECUTION = "aggregate_execution"
RUN_TASK = "run_task"
# Dramatiq stops a run_task message's actor after this long: the tasks a worker runs in place of their
# messages (attempts.Continuation) must fit in it.
RUN_TASK_TIME_LIMIT_MS = 3 * 60 * 60 * 1000
DELIVER_WEBHOOK = "deliver_webhook"


def pool_queue_name(pool: str) -> str:
    """Each pool has a queue of its own, so worker hosts can serve chosen pools."""
    return f"pool.{pool}"


def _broker_declaring(queue_name: str) -> dramatiq.Broker:
    """The broker, with `queue_name` declared on it."""
    broker = get_broker()
    if queue_name not in broker.get_declared_queues():
        broker.declare_queue(queue_name)
    return broker


def send(actor_name: str, queue_name: str, *args, delay_ms: int | None = None) -> dramatiq.Message:
    """Enqueue a message for the actor named `actor_name` on `queue_name` (after `delay_ms`)."""
    broker = _broker_declaring(queue_name)
    message = dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={})
    return broker.enqueue(message, delay=delay_ms)


def send_plan(execution_id: str) -> None:
    send(PLAN_EXECUTION, CONTROL_QUEUE, execution_id)


def send_aggregate(execution_id: str) -> None:
    send(AGGREGATE_EXECUTION, CONTROL_QUEUE, execution_id)


def send_run_task(task_id: int, dispatch_no: int, pool: str) -> dramatiq.Message:
    """The task's attempt for this dispatch number, on its pool's queue."""
    return send(RUN_TASK, pool_queue_name(pool), task_id, dispatch_no)


def send_run_tasks(pool: str, dispatches: list[tuple[int, int]]) -> list[dramatiq.Message]:
    """Several tasks' attempts (task id, dispatch number) on the pool's queue, in one round trip
    where the broker can batch them."""
    queue_name = pool_queue_name(pool)
    broker = _broker_declaring(queue_name)
    batch = [
        dramatiq.Message(queue_name=queue_name, actor_name=RUN_TASK, args=dispatch, kwargs={}, options={})
        for dispatch in dispatches
    ]
    if hasattr(broker, "enqueue_many"):
        return broker.enqueue_many(batch)
    return [broker.enqueue(message) for message in batch]


def send_webhook(delivery_pk: int, claim: int) -> None:
    """Send the webhook delivery; `claim` makes a duplicate of this message a no-op."""
    send(DELIVER_WEBHOOK, WEBHOOK_QUEUE, delivery_pk, claim)
