"""The peer: one DAG of agent tasks run through LangGraph, three ways (bench/peers.py compares them).

Needs the peer packages (bench/requirements-peers.txt, `make bench-peers`); imports no Django, so
it also runs as a child process of its own for the durability run:

    python -m bench.peers_langgraph VARIANT PLAN.json EVENTS.log [--checkpoint DB --thread ID] [--resume]

A plan is a list of {"id", "pool", "duration" (seconds), "deps"}. Each task sleeps its duration, as
the engine's offline model does, and records its start and end (wall clock).

- `stategraph`: the idiomatic graph. A node per task, an edge from its one dependency or a join
  `add_edge([deps…], node)` from several, `max_concurrency` = the sum of the pool limits. LangGraph
  runs it in supersteps: a node starts when the whole step before it is done, and nothing keeps
  a pool to its limit.
- `stategraph-sqlite`: the same graph with the SQLite checkpointer (a checkpoint per superstep,
  and each finished node's writes saved as it finishes); resumable by thread id.
- `functional`: the Functional API, the best a LangGraph user can do: an `@entrypoint` starts each
  task (`@task`) as soon as the futures of its dependencies resolve, and a semaphore per pool holds
  its limit.
"""

import argparse
import asyncio
import json
import operator
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph

VARIANTS = ("stategraph", "stategraph-sqlite", "functional")
# Record(kind: "start" | "end", task id, pool, wall-clock seconds)
Record = Callable[[str, str, str, float], None]


class DagState(TypedDict):
    done: Annotated[list[str], operator.add]  # parallel nodes append; the reducer merges their writes


def _agent_node(spec: dict, record: Record):
    async def agent(state: DagState) -> dict:
        record("start", spec["id"], spec["pool"], time.time())
        await asyncio.sleep(spec["duration"])
        record("end", spec["id"], spec["pool"], time.time())
        return {"done": [spec["id"]]}

    agent.__name__ = spec["id"]
    return agent


def build_stategraph(plan: list[dict], record: Record) -> StateGraph:
    graph = StateGraph(DagState)
    for spec in plan:
        graph.add_node(spec["id"], _agent_node(spec, record))
    waited_on = {dep for spec in plan for dep in spec["deps"]}
    for spec in plan:
        deps = spec["deps"]
        if not deps:
            graph.add_edge(START, spec["id"])
        elif len(deps) == 1:
            graph.add_edge(deps[0], spec["id"])
        else:
            graph.add_edge(list(deps), spec["id"])  # a join: runs once every dependency has
        if spec["id"] not in waited_on:
            graph.add_edge(spec["id"], END)
    return graph


def build_functional(plan: list[dict], limits: dict[str, int], record: Record, checkpointer=None):
    by_id = {spec["id"]: spec for spec in plan}
    semaphores: dict[str, asyncio.Semaphore] = {}

    @task
    async def agent(task_id: str) -> str:
        spec = by_id[task_id]
        async with semaphores.setdefault(spec["pool"], asyncio.Semaphore(limits[spec["pool"]])):
            record("start", task_id, spec["pool"], time.time())
            await asyncio.sleep(spec["duration"])
            record("end", task_id, spec["pool"], time.time())
        return task_id

    @entrypoint(checkpointer=checkpointer)
    async def workflow(task_ids: list[str]) -> list[str]:
        futures: dict[str, asyncio.Future] = {}

        async def when_ready(task_id: str) -> str:
            await asyncio.gather(*(futures[dep] for dep in by_id[task_id]["deps"]))
            return await agent(task_id)

        for task_id in task_ids:  # plan order is a topological order
            futures[task_id] = asyncio.ensure_future(when_ready(task_id))
        return list(await asyncio.gather(*futures.values()))

    return workflow


async def run(
    variant: str,
    plan: list[dict],
    limits: dict[str, int],
    record: Record,
    *,
    checkpoint: str | None = None,
    thread_id: str = "bench",
    resume: bool = False,
) -> float:
    """Run the plan to its end (or on from its checkpoint); returns when it was invoked (wall clock).

    Building and compiling the graph comes before that moment: the time to the first task's start
    is LangGraph's own from the call on."""
    config = {"configurable": {"thread_id": thread_id}, "max_concurrency": sum(limits.values())}
    if variant == "functional":
        workflow = build_functional(plan, limits, record)
        invoked = time.time()
        await workflow.ainvoke([spec["id"] for spec in plan], config)
        return invoked
    graph = build_stategraph(plan, record)
    if variant == "stategraph":
        app = graph.compile()
        invoked = time.time()
        await app.ainvoke({"done": []}, config)
        return invoked
    async with AsyncSqliteSaver.from_conn_string(checkpoint or ":memory:") as saver:
        app = graph.compile(checkpointer=saver)
        invoked = time.time()
        # None: go on from the thread's last checkpoint and the writes saved after it.
        await app.ainvoke(None if resume else {"done": []}, config)
    return invoked


def main(argv: list[str]) -> int:
    """A child process of the durability run: events go to a file, a line each, as they happen."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers_langgraph")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("plan", help="JSON: {'limits': {...}, 'tasks': [...]}")
    parser.add_argument("events")
    parser.add_argument("--checkpoint")
    parser.add_argument("--thread", default="bench")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.plan).read_text())
    with open(args.events, "a", buffering=1) as events:

        def record(kind: str, task_id: str, pool: str, at: float) -> None:
            events.write(f"{kind} {task_id} {pool} {at:.6f}\n")

        events.write(f"process {time.time():.6f}\n")
        invoked = asyncio.run(
            run(
                args.variant,
                spec["tasks"],
                spec["limits"],
                record,
                checkpoint=args.checkpoint,
                thread_id=args.thread,
                resume=args.resume,
            )
        )
        events.write(f"invoked {invoked:.6f}\nfinished {time.time():.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
