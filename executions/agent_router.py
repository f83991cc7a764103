"""Serial or parallel: the seed's "When to Use" rules.

Explicit `mode` wins, then `force_parallel`. In `auto`, a plan goes parallel when it has several
tasks and running them in parallel saves a meaningful share of the time (a "large project that can
parallelize"); a single task, a pure dependency chain or a negligible saving runs serially.
When parallel execution is disabled, `auto_fallback_to_serial` runs everything serially.
"""

from dataclasses import dataclass

MIN_SAVING = 0.15  # parallel must save at least 15% of the serial estimate to be worth coordinating


@dataclass(frozen=True)
class Route:
    mode: str  # "serial" or "parallel"
    reason: str


class ParallelDisabled(Exception):
    """Parallel execution is switched off and falling back to serial is not allowed."""


def choose_mode(
    *,
    requested: str,
    force_parallel: bool,
    enabled: bool,
    auto_fallback_to_serial: bool,
    task_count: int,
    serial_estimate: float,
    parallel_estimate: float,
) -> Route:
    if not enabled:
        if requested == "serial" or auto_fallback_to_serial:
            return Route("serial", "parallel execution is disabled; falling back to serial")
        raise ParallelDisabled("parallel execution is disabled and auto_fallback_to_serial is off")
    if requested == "serial":
        return Route("serial", "serial mode requested")
    if requested == "parallel":
        return Route("parallel", "parallel mode requested")
    if force_parallel:
        return Route("parallel", "force_parallel")
    if task_count <= 1:
        return Route("serial", "single task: one agent is enough")
    saving = 1 - parallel_estimate / serial_estimate if serial_estimate > 0 else 0.0
    if saving < MIN_SAVING:
        return Route("serial", f"dependency chain: parallel would save only {saving:.0%}")
    return Route("parallel", f"{task_count} tasks; parallel saves about {saving:.0%}")
