"""Pure DAG maths for plans: upward ranks, the dispatch ranks searched from them, topological order,
the list-schedule simulation the dispatcher follows, and the lower bound of any schedule. No
database, no Django."""

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class PlanNode:
    key: str
    pool: str
    duration: float
    priority: int = 1
    blocked_by: tuple[str, ...] = ()


def upward_ranks(nodes: Iterable[PlanNode]) -> dict[str, float]:
    """rank(t) = duration(t) + max rank of the tasks that wait on t (the critical path from t)."""
    nodes = {n.key: n for n in nodes}
    children: dict[str, list[str]] = {key: [] for key in nodes}
    for node in nodes.values():
        for dep in node.blocked_by:
            children[dep].append(node.key)
    ranks: dict[str, float] = {}
    for key in topological_order(nodes.values())[::-1]:
        ranks[key] = nodes[key].duration + max((ranks[c] for c in children[key]), default=0.0)
    return ranks


def topological_order(nodes: Iterable[PlanNode]) -> list[str]:
    nodes = list(nodes)
    pending = {n.key: len(n.blocked_by) for n in nodes}
    waiting: dict[str, list[str]] = {n.key: [] for n in nodes}
    for n in nodes:
        for dep in n.blocked_by:
            waiting[dep].append(n.key)
    order = []
    frontier = [n.key for n in nodes if not n.blocked_by]
    while frontier:
        key = frontier.pop(0)
        order.append(key)
        for child in waiting[key]:
            pending[child] -= 1
            if pending[child] == 0:
                frontier.append(child)
    if len(order) != len(nodes):
        raise ValueError("the plan has a dependency cycle")
    return order


def simulate_makespan(
    nodes: list[PlanNode],
    limits: dict[str, int],
    *,
    policy: str = "rank",
    ranks: dict[str, float] | None = None,
) -> float:
    """List-schedule the DAG on pools with their limits; the makespan the dispatcher would reach.

    `policy` is "rank" (the dispatcher's rule: lower priority number, then higher rank, with `ranks`
    or, by default, `dispatch_ranks`) or "fifo" (ready order), for comparisons.
    """
    if policy == "rank" and ranks is None:
        ranks = dispatch_ranks(nodes, limits)
    return _list_schedule(nodes, limits, ranks if policy == "rank" else None)


# The search scores ranks on the plan and on copies of it whose durations each move by up to ±1 %:
# a real run's finishes come a little early or late, and ranks that win only on exact ties (a task
# finishing at the very instant another is released) lose it. Simulations × tasks are capped so a
# big plan's search stays within about 50 ms of a worker's CPU.
DURATION_NOISE = 0.01
SCORED_COPIES = 8
SEARCH_BUDGET = 64 * SCORED_COPIES * 100


def dispatch_ranks(
    nodes: list[PlanNode], limits: dict[str, int], *, rounds: int = 64, copies: int = SCORED_COPIES
) -> dict[str, float]:
    """The ranks the dispatcher orders a plan's ready tasks by: the upward ranks (critical path
    first), or ranks found near them whose list schedules finish sooner.

    Critical path first is blind to the pools: when a pool's work, not a chain, bounds the plan, a
    different order among equally urgent tasks can keep the busy pool fed to the end. The search
    perturbs the best ranks so far (×(1 + N(0, 0.2)), a seeded generator: the same plan gets the
    same ranks) and keeps a candidate only if its mean makespan over the plan and `copies - 1`
    copies with slightly moved durations (`DURATION_NOISE`) is shorter, so the result is never
    predicted worse than the upward ranks on that mean. On the benchmark's random DAGs of 60 tasks,
    each task simulated 4–10 ms later than its estimate (as the engine runs them), the makespan is
    1.018 of the plan's exact list schedule with these ranks, 1.024 with ranks scored on the exact
    plan alone and 1.030 with the upward ranks; the search takes about 23 ms.
    """
    nodes = list(nodes)
    best = upward_ranks(nodes)
    if len(nodes) < 3:
        return best
    shape = _Shape(nodes, limits)
    scored = [[n.duration for n in plan] for plan in perturbed_plans(nodes, copies)]

    def score(ranks: dict[str, float]) -> float:
        order = shape.order(ranks)
        return sum(shape.makespan(durations, order) for durations in scored)

    best_score = score(best)
    rng = random.Random(len(nodes))
    for _ in range(min(rounds, max(8, SEARCH_BUDGET // (len(scored) * len(nodes))))):
        candidate = {key: rank * (1 + rng.gauss(0, 0.2)) for key, rank in best.items()}
        candidate_score = score(candidate)
        if candidate_score < best_score * (1 - 1e-9):
            best, best_score = candidate, candidate_score
    return best


def perturbed_plans(nodes: list[PlanNode], copies: int = SCORED_COPIES) -> list[list[PlanNode]]:
    """The plan and `copies - 1` copies whose durations each move by up to ±`DURATION_NOISE`
    (seeded by the plan's size: the same plan gets the same copies)."""
    noise = random.Random(len(nodes) + 1)
    return [nodes] + [
        [
            PlanNode(
                n.key,
                n.pool,
                n.duration * (1 + noise.uniform(-DURATION_NOISE, DURATION_NOISE)),
                n.priority,
                n.blocked_by,
            )
            for n in nodes
        ]
        for _ in range(copies - 1)
    ]


class _Shape:
    """A plan's structure as list indexes, built once for the many list schedules of a search: a
    schedule then reads lists, not dictionaries keyed by task."""

    def __init__(self, nodes: list[PlanNode], limits: dict[str, int]):
        self.keys = [n.key for n in nodes]
        index = {key: i for i, key in enumerate(self.keys)}
        pools = {pool: i for i, pool in enumerate(dict.fromkeys(n.pool for n in nodes))}
        self.pool_of = [pools[n.pool] for n in nodes]
        self.limits = [limits.get(pool, 1) for pool in pools]
        self.priority = [n.priority for n in nodes]
        self.blocked = [len(n.blocked_by) for n in nodes]
        self.children: list[list[int]] = [[] for _ in nodes]
        for i, n in enumerate(nodes):
            for dep in n.blocked_by:
                self.children[index[dep]].append(i)
        self.roots = [i for i, n in enumerate(nodes) if not n.blocked_by]
        # Finishing at the same instant, tasks are taken in the order of their keys.
        self.key_order = [0] * len(nodes)
        for position, i in enumerate(sorted(range(len(nodes)), key=self.keys.__getitem__)):
            self.key_order[i] = position

    def order(self, ranks: dict[str, float] | None) -> list[tuple] | None:
        """Each task's place among ready tasks of its pool (before the ready order), or None: FIFO."""
        if ranks is None:
            return None
        return [(self.priority[i], -ranks[key]) for i, key in enumerate(self.keys)]

    def makespan(self, durations: list[float], order: list[tuple] | None) -> float:
        """The list schedule's makespan: durations in the plan's order, `order` from `order()`."""
        remaining = list(self.blocked)
        ready: list[list] = [[] for _ in self.limits]
        busy = [0] * len(self.limits)
        children, pool_of, key_order, limits = self.children, self.pool_of, self.key_order, self.limits
        counter = 0
        for i in self.roots:
            counter += 1
            heapq.heappush(ready[pool_of[i]], (order[i] if order else (), counter, i))
        running: list[tuple[float, int, int]] = []
        now = 0.0
        changed = set(range(len(limits)))  # the pools with a free slot or a new ready task
        while True:
            for pool in changed:
                heap = ready[pool]
                while heap and busy[pool] < limits[pool]:
                    i = heapq.heappop(heap)[2]
                    busy[pool] += 1
                    heapq.heappush(running, (now + durations[i], key_order[i], i))
            if not running:
                return now
            now, _, i = heapq.heappop(running)
            busy[pool_of[i]] -= 1
            changed = {pool_of[i]}
            for child in children[i]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    counter += 1
                    heapq.heappush(ready[pool_of[child]], (order[child] if order else (), counter, child))
                    changed.add(pool_of[child])


def _list_schedule(nodes: list[PlanNode], limits: dict[str, int], ranks: dict[str, float] | None) -> float:
    """The makespan of dispatching ready tasks by (priority, -rank, ready order), or in ready order
    when `ranks` is None, on pools with their limits."""
    shape = _Shape(nodes, limits)
    return shape.makespan([n.duration for n in nodes], shape.order(ranks))


def lower_bound(nodes: list[PlanNode], limits: dict[str, int]) -> float:
    """max(critical path, max over pools of total work / max_concurrent)."""
    critical = max(upward_ranks(nodes).values(), default=0.0)
    work: dict[str, float] = {}
    for n in nodes:
        work[n.pool] = work.get(n.pool, 0.0) + n.duration
    return max([critical] + [w / max(1, limits.get(p, 1)) for p, w in work.items()])
