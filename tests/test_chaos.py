"""scripts/chaos in CI: every fault scenario at tiny sizes, every bound held."""

from __future__ import annotations

import json

import pytest

from scripts.chaos import SCENARIOS
from tests.support.processes import run_script

pytestmark = pytest.mark.slow  # the chaos smoke run: minutes

SMOKE_S_PER_SCENARIO = 30  # a smoke scenario takes about 10 s on 2 cores


@pytest.mark.timeout(SMOKE_S_PER_SCENARIO * len(SCENARIOS) + 10)
def test_chaos_smoke_holds_every_bound() -> None:
    code, stdout, stderr = run_script(
        "chaos", "--smoke", timeout_s=SMOKE_S_PER_SCENARIO * len(SCENARIOS)
    )
    tail = f"{stdout[-8000:]}\n{stderr[-2000:]}"
    assert code == 0, tail
    figures = json.loads(stdout.strip().splitlines()[-1])
    assert figures["scenarios"] == len(SCENARIOS), tail
    assert (figures["lost"], figures["concurrent_duplicates"], figures["orphans"]) == (0, 0, 0)
    assert figures["max_recovery_s"] <= 15, tail
