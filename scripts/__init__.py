"""The project's developer programs, run as modules from the project root through their
executables (scripts/bench -> `python -m scripts.bench`, scripts/chaos -> `python -m
scripts.chaos`): the benchmark (_bench_*.py), the fault-injection run (_chaos_*.py,
_hostile_*.py) and what they share (_harness.py). They take their Redis servers from
tests/support, as the tests do."""
