"""The PM: decompose a request into a validated task DAG and its contract.

The PM model answers with the seed's task JSON and the plan's `contract` (endpoints, tables,
ownership: DESIGN.md, "Parallel agents agree"). The plan is validated; fixable details (missing
priority, a timeout outside the pool's bounds, an unknown pool name) are repaired in place with a
note; structural errors (duplicate ids, missing dependencies, cycles, too many tasks) and an
invalid contract (not an object, a bad method or path, a duplicate endpoint or table, ownership of
an unknown task) send the errors back to the model once. A plan still invalid gives way to the
deterministic planner; a valid plan whose contract is still invalid, or that has none, gets the
deterministic planner's contract for its tasks.

A follow-up is planned against its project's stored contract: the PM sees it and is asked to keep
it and add to it; whatever contract the plan ends with (the model's, or the deterministic one) is
an amendment applied over the stored one (`contract.amend`), so the execution's contract holds
every endpoint and table that already exists.
"""

import json
import logging
import math
import re
from dataclasses import dataclass, field

from pools import llm
from pools.contracts.contract import ContractInvalid, amend, project_part, validate_contract
from pools.contracts.derive import AREAS, added_fields, adds_accounts, area_of, contract_for, entities
from pools.prompts import PLAN_SYSTEM, plan_prompt, plan_repair_prompt
from pools.replies import ReplyError, extract_json

from .task_distributor import classify_task, detect_streams

log = logging.getLogger("openclaw.pm")

TASK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MIN_TIMEOUT_SEC = 5
MAX_DESCRIPTION_CHARS = 2000
MAX_ESTIMATE_SEC = 86_400  # a model's estimate beyond a day is not an estimate
# A plan task's fields as a client sees them (and may edit them, approving a plan).
PLAN_TASK_FIELDS = ("id", "pool", "description", "priority", "timeout_sec", "blocked_by", "soft_deps")


@dataclass
class PoolLimits:
    timeout_sec: int
    enabled: bool = True
    role: str = ""


def pool_for_role(role: str, pools: dict[str, PoolLimits]) -> str | None:
    """The enabled pool that does `role`'s work (the first by name), if any."""
    return next((name for name in sorted(pools) if pools[name].enabled and pools[name].role == role), None)


def route_by_intent(description: str, pools: dict[str, PoolLimits]) -> str:
    """The enabled pool whose role fits the description best (keyword intent, `task_distributor`)."""
    enabled = sorted(name for name, limits in pools.items() if limits.enabled) or sorted(pools) or ["codegen"]
    roles = [pools[name].role for name in enabled if pools[name].role]
    role = classify_task(description, roles) if roles else ""
    return pool_for_role(role, pools) or enabled[0]


@dataclass
class PlanResult:
    tasks: list[dict]
    source: str  # "model", "repaired" or "fallback"
    notes: list[str] = field(default_factory=list)
    completions: list[tuple[llm.ModelSpec, llm.Completion]] = field(default_factory=list)
    contract: dict = field(default_factory=dict)  # the effective one: the stored contract amended
    contract_source: str = ""  # "model", "repaired" or "fallback"
    amendment: dict = field(default_factory=dict)  # the plan's own endpoints and tables


class PlanInvalid(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def validate_plan(
    raw: object, pools: dict[str, PoolLimits], *, max_tasks: int
) -> tuple[list[dict], list[str]]:
    """Normalise a plan object; returns (tasks, repair notes) or raises PlanInvalid with every error."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise PlanInvalid(['the plan must be an object with a "tasks" list'])
    items = raw["tasks"]
    if not items:
        raise PlanInvalid(["the plan has no tasks"])
    if len(items) > max_tasks:
        raise PlanInvalid([f"the plan has {len(items)} tasks; at most {max_tasks} are allowed"])

    errors: list[str] = []
    notes: list[str] = []
    tasks: list[dict] = []
    seen: set[str] = set()
    enabled_pools = [name for name, limits in pools.items() if limits.enabled]
    for index, item in enumerate(items):
        where = f"task #{index + 1}"
        if not isinstance(item, dict):
            errors.append(f"{where} is not an object")
            continue
        task_id = item.get("id")
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            errors.append(f"{where} has no valid id (letters, digits, _ . -, at most 40)")
            continue
        where = task_id
        if task_id in seen:
            errors.append(f"duplicate task id {task_id}")
            continue
        seen.add(task_id)
        description = item.get("description")
        if not isinstance(description, str) or not description.strip():
            errors.append(f"{where} has no description")
            continue
        description = description.strip()[:MAX_DESCRIPTION_CHARS]
        pool = item.get("pool")
        if pool not in enabled_pools:
            by_role = pool_for_role(pool, pools) if isinstance(pool, str) else None
            guessed = by_role or route_by_intent(description, pools)
            how = "by its role" if by_role else "by intent"
            notes.append(f"{where}: pool {str(pool)[:40]!r} is not available; routed to {guessed} {how}")
            pool = guessed
        priority = item.get("priority", 1)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
            notes.append(f"{where}: priority {priority!r} replaced by 1")
            priority = 1
        limit = pools[pool].timeout_sec
        timeout = item.get("timeout_sec", limit)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not MIN_TIMEOUT_SEC <= timeout <= limit
        ):
            notes.append(
                f"{where}: timeout_sec {timeout!r} outside [{MIN_TIMEOUT_SEC}, {limit}] "
                f"of pool {pool}; set to {limit}"
            )
            timeout = limit
        deps = []
        for name in ("blocked_by", "soft_deps"):
            value = item.get(name) or []
            if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
                errors.append(f"{where}: {name} must be a list of task ids")
                value = []
            deps.append(list(dict.fromkeys(value)))
        context = item.get("context") or {}
        if not isinstance(context, dict):
            notes.append(f"{where}: context that is not an object was dropped")
            context = {}
        if "estimate_sec" in context and not plausible_seconds(context["estimate_sec"], MAX_ESTIMATE_SEC):
            notes.append(f"{where}: estimate_sec {str(context['estimate_sec'])[:40]!r} dropped")
            context = {k: v for k, v in context.items() if k != "estimate_sec"}
        tasks.append(
            {
                "id": task_id,
                "pool": pool,
                "description": description,
                "priority": priority,
                "timeout_sec": int(timeout),
                "blocked_by": deps[0],
                "soft_deps": deps[1],
                "context": context,
            }
        )

    ids = {t["id"] for t in tasks}
    for task in tasks:
        for dep in task["blocked_by"] + task["soft_deps"]:
            if dep == task["id"]:
                errors.append(f"{task['id']} depends on itself")
            elif dep not in ids:
                errors.append(f"{task['id']} depends on unknown task {dep}")
    if not errors:
        cycle = find_cycle({t["id"]: t["blocked_by"] + t["soft_deps"] for t in tasks})
        if cycle:
            errors.append("dependency cycle: " + " -> ".join(cycle))
    if errors:
        raise PlanInvalid(errors)
    return tasks, notes


def plausible_seconds(value: object, limit: float) -> bool:
    """A model's number of seconds is used only when it is a finite number within [0, limit]."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= limit
    )


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in a dependency graph as a path (first node repeated at the end), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for root in graph:
        if colour[root] != WHITE:
            continue
        stack = [(root, iter(graph[root]))]
        path = [root]
        colour[root] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(child) == GREY:
                return path[path.index(child) :] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(graph[child])))
                path.append(child)
    return None


def layers_to_grow(
    request: str, existing_files: list[tuple[str, int]] | None, existing_contract: dict | None
) -> frozenset[str]:
    """The project's layers (its top-level `frontend`, `backend` and `database` folders) that a
    follow-up naming a kind of record the project's contract has no table for, adding fields to
    one, or adding accounts, must reach: a record is a table (and a migration), its endpoints and
    its page; accounts are a column and a table, their endpoints and every record's, and a page."""
    known = {table["name"] for table in (existing_contract or {}).get("tables", [])}
    new_records = [table for table in entities(request, placeholder=False) if table not in known]
    if not new_records and not added_fields(request, known) and not adds_accounts(request, existing_contract):
        return frozenset()
    return frozenset(path.split("/", 1)[0] for path, _ in existing_files or []) & set(AREAS)


def deterministic_plan(
    request: str, pools: dict[str, PoolLimits], layers: frozenset[str] = frozenset()
) -> list[dict]:
    """The planner that needs no model: work streams by intent (also the offline PM's answer);
    `layers` as `layers_to_grow`."""
    tasks = []
    for stream in detect_streams(request, layers):
        # A stream names the role of its work; the pool is whichever pool has that role now.
        pool = pool_for_role(stream.pool, pools) or route_by_intent(stream.description, pools)
        limit = pools[pool].timeout_sec if pool in pools else 300
        tasks.append(
            {
                "id": stream.key,
                "pool": pool,
                "description": stream.description,
                "priority": stream.priority,
                "timeout_sec": limit,
                "blocked_by": list(stream.blocked_by),
                "soft_deps": list(stream.soft_deps),
                "context": {"estimate_sec": stream.estimate_sec},
            }
        )
    return tasks


def deterministic_contract(
    request: str,
    tasks: list[dict],
    pools: dict[str, PoolLimits],
    follow_up: bool = False,
    stored: dict | None = None,
) -> dict:
    """The deterministic planner's contract for these tasks (`pools.contracts.derive`); a
    `follow_up` builds on a project that has files or a contract (`stored`) already."""
    roles = {name: limits.role for name, limits in pools.items()}
    return contract_for(
        request,
        {t["id"]: area_of(t["description"], roles.get(t["pool"], "")) for t in tasks},
        follow_up=follow_up,
        stored=stored,
    )


def plan_contract(raw: object, tasks: list[dict]) -> tuple[dict | None, list[str], list[str]]:
    """The plan's contract if it has a valid one: (contract or None, notes, errors)."""
    if not isinstance(raw, dict) or raw.get("contract") is None:
        return None, ["the plan has no contract"], []
    try:
        contract, notes = validate_contract(raw["contract"], {t["id"] for t in tasks})
    except ContractInvalid as exc:
        return None, [], exc.errors
    return contract, notes, []


def decompose(
    request: str,
    spec: llm.ModelSpec,
    pools: dict[str, PoolLimits],
    *,
    max_tasks: int,
    timeout: float,
    existing_files: list[tuple[str, int]] | None = None,
    existing_contract: dict | None = None,
) -> PlanResult:
    """Ask the PM model for a plan and its contract, validate them, repair once, fall back to the
    deterministic planner (or, for a valid plan, to its contract). `existing_files` (path, size): the
    project's current tree, which a follow-up builds on; `existing_contract`: the project's stored
    contract, which the plan's contract amends."""
    result = _decompose(
        request,
        spec,
        pools,
        max_tasks=max_tasks,
        timeout=timeout,
        existing_files=existing_files,
        existing_contract=project_part(existing_contract),
    )
    result.amendment = project_part(result.contract)
    result.contract = amend(existing_contract, result.contract)
    return result


def _decompose(
    request: str,
    spec: llm.ModelSpec,
    pools: dict[str, PoolLimits],
    *,
    max_tasks: int,
    timeout: float,
    existing_files: list[tuple[str, int]] | None,
    existing_contract: dict,
) -> PlanResult:
    completions: list[tuple[llm.ModelSpec, llm.Completion]] = []
    available = {name: limits.timeout_sec for name, limits in pools.items() if limits.enabled}
    prompt = plan_prompt(request, available, max_tasks, existing_files, existing_contract)
    # The offline PM has no model to plan with: it answers with the deterministic plan.
    planned = deterministic_plan(request, pools, layers_to_grow(request, existing_files, existing_contract))
    # A new project's contract is there too, empty: a follow-up is one with files or interfaces.
    follow_up = bool(existing_files or existing_contract.get("endpoints") or existing_contract.get("tables"))
    fallback = [{k: v for k, v in t.items() if k != "timeout_sec"} for t in planned]
    meta = {
        "request": request,
        "pools": sorted(available),
        "fallback_plan": fallback,
        "fallback_contract": deterministic_contract(request, planned, pools, follow_up, existing_contract),
    }
    errors: list[str] = []
    valid: tuple | None = None  # (tasks, notes, round, contract errors) of a valid plan whose contract is not
    for round_ in ("model", "repaired"):
        if round_ == "repaired":
            prompt = plan_repair_prompt(
                request, available, max_tasks, errors, existing_files, existing_contract
            )
        try:
            completion = llm.complete(
                spec,
                llm.LLMRequest(
                    purpose="plan",
                    system=PLAN_SYSTEM,
                    prompt=prompt,
                    timeout=timeout,
                    meta=meta,
                    expected_output_tokens=800,
                ),
            )
        except llm.LLMError as exc:
            errors = [f"PM model call failed: {exc}"]
            break
        completions.append((spec, completion))
        try:
            raw = extract_json(completion.text)
            tasks, notes = validate_plan(raw, pools, max_tasks=max_tasks)
        except ReplyError as exc:
            errors = [str(exc)]
        except PlanInvalid as exc:
            errors = exc.errors
        else:
            contract, contract_notes, contract_errors = plan_contract(raw, tasks)
            if contract is not None:
                return PlanResult(tasks, round_, notes + contract_notes, completions, contract, round_)
            if not contract_errors:  # no contract at all: the deterministic one, without a repair
                derived = deterministic_contract(request, tasks, pools, follow_up, existing_contract)
                notes += [f"{n}: the deterministic planner's contract is used" for n in contract_notes]
                return PlanResult(tasks, round_, notes, completions, derived, "fallback")
            valid = (tasks, notes, round_, contract_errors)
            errors = [f"contract: {e}" for e in contract_errors]
        log.warning("PM plan rejected (%s): %s", round_, "; ".join(errors))
    if valid is not None:
        tasks, notes, round_, contract_errors = valid
        notes = notes + [f"model contract rejected: {e}" for e in contract_errors]
        return PlanResult(
            tasks,
            round_,
            notes,
            completions,
            deterministic_contract(request, tasks, pools, follow_up, existing_contract),
            "fallback",
        )
    return PlanResult(
        planned,
        "fallback",
        [f"model plan rejected: {e}" for e in errors],
        completions,
        deterministic_contract(request, planned, pools, follow_up, existing_contract),
        "fallback",
    )


def plan_as_json(tasks: list[dict], contract: dict | None = None) -> str:
    return json.dumps({"tasks": tasks, **({"contract": contract} if contract else {})}, indent=2)
