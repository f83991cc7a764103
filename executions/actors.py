"""The Dramatiq actors of executions: thin edges that load nothing but an id and call one service.

Our own retries live in the database (attempts, the reaper); Dramatiq must not replay side effects
on its own, hence `max_retries=0`. Messages reach these actors by name (`messages`).
"""

import dramatiq

from . import messages
from .agent_attempt import task_run
from .planning import execution_plan
from .result_aggregator import aggregate
from .webhooks import webhook_deliver
from .worker_queues import DEFAULT_POOLS

CONTROL_OPTIONS = {"queue_name": messages.CONTROL_QUEUE, "max_retries": 0, "time_limit": 30 * 60 * 1000}


@dramatiq.actor(actor_name=messages.PLAN_EXECUTION, **CONTROL_OPTIONS)
def plan_execution(execution_id: str) -> None:
    execution_plan(execution_id)


@dramatiq.actor(actor_name=messages.AGGREGATE_EXECUTION, **CONTROL_OPTIONS)
def aggregate_execution(execution_id: str) -> None:
    aggregate(execution_id)


# One actor serves every pool: its messages are sent to the queue of the task's pool.
@dramatiq.actor(
    actor_name=messages.RUN_TASK,
    queue_name=messages.pool_queue_name(DEFAULT_POOLS[0]),
    max_retries=0,
    time_limit=messages.RUN_TASK_TIME_LIMIT_MS,
)
def run_task(task_id: int, dispatch_no: int) -> None:
    task_run(task_id, dispatch_no)


# Webhook retries are scheduled in the database (`webhooks`), never by Dramatiq.
@dramatiq.actor(
    actor_name=messages.DELIVER_WEBHOOK,
    queue_name=messages.WEBHOOK_QUEUE,
    max_retries=0,
    time_limit=5 * 60 * 1000,
)
def deliver_webhook(delivery_pk: int, claim: int) -> None:
    webhook_deliver(delivery_pk, claim)
