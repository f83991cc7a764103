"""The Dramatiq actors of executions: thin edges that load nothing but an id and call one service.

Our own retries live in the database (attempts, the reaper); Dramatiq must not replay side effects
on its own, hence `max_retries=0`. Messages reach these actors by name (`messages`).
"""

import dramatiq
from dramatiq import get_broker

from pools.models import WorkerPool, pool_queue_name

from . import messages
from .agent_attempt import task_run
from .planning import execution_plan
from .result_aggregator import aggregate

CONTROL_OPTIONS = {"queue_name": messages.CONTROL_QUEUE, "max_retries": 0, "time_limit": 30 * 60 * 1000}
# The seed's pools: their queues exist before the database does (first migrate).
DEFAULT_POOLS = ("codegen", "security", "database")


@dramatiq.actor(actor_name=messages.PLAN_EXECUTION, **CONTROL_OPTIONS)
def plan_execution(execution_id: str) -> None:
    execution_plan(execution_id)


@dramatiq.actor(actor_name=messages.AGGREGATE_EXECUTION, **CONTROL_OPTIONS)
def aggregate_execution(execution_id: str) -> None:
    aggregate(execution_id)


# One actor serves every pool: its messages are sent to the queue of the task's pool.
@dramatiq.actor(
    actor_name=messages.RUN_TASK,
    queue_name=pool_queue_name(DEFAULT_POOLS[0]),
    max_retries=0,
    time_limit=3 * 60 * 60 * 1000,
)
def run_task(task_id: int, dispatch_no: int) -> None:
    task_run(task_id, dispatch_no)


def declare_pool_queues() -> None:
    """Workers consume the queues declared when they boot: every pool in the database, and the defaults."""
    broker = get_broker()
    names = set(DEFAULT_POOLS)
    try:
        names |= set(WorkerPool.objects.values_list("name", flat=True))
    except Exception:  # no database yet (first migrate): the defaults are enough
        pass
    for name in names:
        broker.declare_queue(pool_queue_name(name))


declare_pool_queues()
