"""scripts/chaos in CI: all six fault scenarios at tiny sizes, every bound held."""

from __future__ import annotations

import json

import pytest
from helpers import run_script


@pytest.mark.timeout(120)
def test_chaos_smoke_holds_every_bound() -> None:
    code, stdout, stderr = run_script("chaos", "--smoke", timeout_s=110)
    tail = f"{stdout[-4000:]}\n{stderr[-2000:]}"
    assert code == 0, tail
    figures = json.loads(stdout.strip().splitlines()[-1])
    assert figures["scenarios"] == 6, tail
    assert (figures["lost"], figures["concurrent_duplicates"], figures["orphans"]) == (0, 0, 0)
    assert figures["max_recovery_s"] <= 15, tail
