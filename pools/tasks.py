"""Pool actors: one actor, one queue per pool (`pool.<name>`), so worker hosts can serve chosen pools."""

import dramatiq
from dramatiq import get_broker

DEFAULT_POOLS = ("codegen", "security", "database")


@dramatiq.actor(queue_name="pool.codegen", max_retries=0, time_limit=3 * 60 * 60 * 1000)
def run_task(task_id: int, dispatch_no: int) -> None:
    from .agents import task_run

    task_run(task_id, dispatch_no)


def declare_pool_queues() -> None:
    """Workers consume the queues declared when they boot: every pool in the database, and the defaults."""
    broker = get_broker()
    names = set(DEFAULT_POOLS)
    try:
        from .models import WorkerPool

        names |= set(WorkerPool.objects.values_list("name", flat=True))
    except Exception:  # no database yet (first migrate): the defaults are enough
        pass
    for name in names:
        broker.declare_queue(f"pool.{name}")


def send_run_task(task_id: int, dispatch_no: int, queue_name: str) -> None:
    broker = get_broker()
    if queue_name not in broker.get_declared_queues():
        broker.declare_queue(queue_name)
    broker.enqueue(run_task.message(task_id, dispatch_no).copy(queue_name=queue_name))


declare_pool_queues()
