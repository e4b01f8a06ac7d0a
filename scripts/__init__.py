"""The project's developer programs, run as modules from the project root through their
executables (scripts/bench -> `python -m scripts.bench`, scripts/chaos -> `python -m
scripts.chaos`): the benchmark, the fault-injection run and what they share (_harness.py,
_chaos_*.py). They take their Redis servers from tests/support, as the tests do."""
