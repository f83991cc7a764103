"""Control-queue actors: thin doors to the planning and aggregation services."""

import dramatiq

CONTROL_QUEUE = "control"
# Our own retries live in the database; Dramatiq must not replay side effects on its own.
CONTROL_OPTIONS = {"queue_name": CONTROL_QUEUE, "max_retries": 0, "time_limit": 30 * 60 * 1000}


@dramatiq.actor(**CONTROL_OPTIONS)
def plan_execution(execution_id: str) -> None:
    from .services import execution_plan

    execution_plan(execution_id)


@dramatiq.actor(**CONTROL_OPTIONS)
def aggregate_execution(execution_id: str) -> None:
    from .result_aggregator import aggregate

    aggregate(execution_id)
