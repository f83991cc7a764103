"""The integration gate of an execution: its merged tree compiled and tested as a whole.

At aggregation, once every task is done and the contract's conflicts are settled, the merged tree
runs in the sandbox (`pools.integration_gate`); the result is the execution's `integration`. A
failure is a conflict of kind `integration` between the tasks whose files the failing output names;
it is resolved by a remediation of the lineage that holds the failing tests (or, without one, the
last file the output names), given the failing output, and the gate runs again at the next
aggregation: resolved when it passes, another round while rounds remain, else unresolved, and
the execution ends `partial`. A gate that cannot run (no sandbox) settles nothing: `integration.ran`
is false with the reason, and the delivery is not called verified.
"""

import logging
from collections import Counter

from django.conf import settings

from pools import integration_gate
from pools.models import PoolRole

from .conflicts import detect, give_up, resolve, start_lineage_fix
from .models import Conflict, Task
from .states import CONFLICT_OPEN, ConflictKind, ConflictStatus, TaskKind

log = logging.getLogger("openclaw.aggregator")


def run(files: dict[str, str]) -> dict:
    """The gate on a merged tree, as the execution's `integration` object."""
    result = integration_gate.run_gate(
        files, timeout_sec=settings.OPENCLAW_GATE_TIMEOUT_SEC, workspaces=settings.OPENCLAW_WORKSPACES_DIR
    )
    return result.as_dict()


def summary_line(gate: dict) -> str:
    """The gate's result in one line, for the client's answer and the Slack thread."""
    if not gate:
        return ""
    if not gate.get("ran"):
        return (
            f"Integration gate not run: {gate.get('reason') or 'unknown'}; the merged project is not verified"
        )
    tests = f"{gate.get('passed', 0)} passed, {gate.get('failed', 0)} failed"
    if gate.get("ok"):
        return f"Integration gate passed: `{gate.get('command')}` ({tests})"
    return f"Integration gate failed: `{gate.get('command')}` exited {gate.get('exit_code')} ({tests})"


def failed(gate: dict) -> bool:
    return bool(gate) and not gate.get("ok", True)


def implicated(gate: dict, files: dict[str, str], owner_of: dict[str, str]) -> tuple[str | None, list[str]]:
    """The lineage to fix and every lineage the failing output names."""
    output = gate.get("output_tail", "")
    roots = sorted({integration_gate.test_root(p) for p in files if integration_gate.is_python_test(p)})
    mentioned = integration_gate.mentioned_paths(output, files, roots)
    owners = list(dict.fromkeys(owner_of[p] for p in mentioned if p in owner_of))
    failing = [
        owner_of[path]
        for test in integration_gate.failing_tests(output)
        for path in [test, *(f"{root}/{test}" for root in roots if root != ".")]
        if path in owner_of
    ]
    if failing:
        return Counter(failing).most_common(1)[0][0], list(dict.fromkeys([*failing, *owners]))
    # A failing test no task of the execution wrote (a follow-up's project's own): the last of its
    # files the output names, e.g. the module in the traceback.
    owned = [path for path in mentioned if path in owner_of]
    if owned:
        return owner_of[owned[-1]], owners
    return None, owners


def settle(execution_id: str, gate: dict, files: dict[str, str], owner_of: dict[str, str]) -> list[str]:
    """Resolve, continue or raise the execution's integration conflict; returns the fix tasks started."""
    conflict = (
        Conflict.objects.filter(execution_id=execution_id, kind=ConflictKind.INTEGRATION)
        .exclude(status=ConflictStatus.RESOLVED)
        .first()
    )
    if not failed(gate):
        if conflict is not None and gate.get("ran"):
            fixes = conflict.details.get("tasks", [])[len(conflict.between) :]
            resolve(
                conflict,
                f"Round {conflict.rounds}: {fixes[-1] if fixes else 'a retry'} fixed it; the gate passes: "
                f"`{gate['command']}` ({gate['passed']} passed).",
                f"the merged project passes its compile and tests (via {', '.join(fixes) or 'a retry'})",
            )
        elif conflict is not None and conflict.status in CONFLICT_OPEN:
            give_up(conflict, f"the gate could not run again: {gate.get('reason', '')}")
        return []
    deviating, owners = implicated(gate, files, owner_of)
    if deviating is None:
        deviating = fallback_owner(execution_id)
    evidence = {k: gate.get(k) for k in ("command", "exit_code", "passed", "failed", "output_tail")}
    if conflict is None:
        between = list(dict.fromkeys([d for d in [deviating, *owners] if d])) or ["integration"]
        conflict = detect(
            execution_id,
            ConflictKind.INTEGRATION,
            between,
            f"Integration gate: `{gate.get('command')}` fails on the merged project "
            f"(exit {gate.get('exit_code')}; {gate.get('failed', 0)} failed, {gate.get('passed', 0)} passed)",
            {"gate": evidence, "deviating": [deviating] if deviating else [], "tasks": between},
        )
    elif conflict.status not in CONFLICT_OPEN:
        return []  # unresolved earlier: reported, not fought again
    else:
        details = {**conflict.details, "gate": evidence}
        Conflict.objects.filter(pk=conflict.pk).update(details=details)
        conflict.details = details
    root = Task.objects.filter(execution_id=execution_id, key=deviating).first() if deviating else None
    if root is None:
        give_up(conflict, "no task's files are named by the failing output")
        return []
    key = start_lineage_fix(
        conflict,
        root,
        label="gate",
        description=f"Make the merged project pass the integration gate (`{gate.get('command')}`)",
        context={"gate": evidence},
    )
    return [key] if key else []


def fallback_owner(execution_id: str) -> str | None:
    """Whom to give a failure the output does not place: the first planned code task."""
    return (
        Task.objects.filter(execution_id=execution_id, kind=TaskKind.PLAN, role=PoolRole.CODEGEN)
        .order_by("id")
        .values_list("key", flat=True)
        .first()
    )
