"""Benchmarks of the engine on real processes: `python -m bench [names…] [--quick]`."""
