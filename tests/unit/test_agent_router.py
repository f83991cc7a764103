import pytest

from executions.agent_router import ParallelDisabled, choose_mode


def route(**overrides):
    args = {
        "requested": "auto",
        "force_parallel": False,
        "enabled": True,
        "auto_fallback_to_serial": True,
        "task_count": 4,
        "serial_estimate": 315,
        "parallel_estimate": 210,
    }
    args.update(overrides)
    return choose_mode(**args)


def test_large_parallelizable_project_goes_parallel():
    assert route().mode == "parallel"


def test_single_task_goes_serial():
    assert route(task_count=1, serial_estimate=120, parallel_estimate=120).mode == "serial"


def test_dependency_chain_goes_serial():
    decision = route(task_count=3, serial_estimate=300, parallel_estimate=300)
    assert decision.mode == "serial" and "chain" in decision.reason


def test_force_parallel_and_explicit_mode_win():
    assert (
        route(task_count=1, serial_estimate=10, parallel_estimate=10, force_parallel=True).mode == "parallel"
    )
    assert route(requested="serial").mode == "serial"
    assert route(requested="parallel", task_count=1).mode == "parallel"


def test_disabled_parallel_falls_back_to_serial_or_refuses():
    assert route(enabled=False, requested="parallel").mode == "serial"
    with pytest.raises(ParallelDisabled):
        route(enabled=False, auto_fallback_to_serial=False, requested="parallel")
