"""Scenario "lifecycle" of scripts/chaos.py: the stops and restarts every user does (issue 11).

Three ways to stop (_chaos_stop_kinds.py), each repeated with a backlog in a 1-worker and a
5-worker channel:

  usr2        `kill -USR2` of the runner (a Redis server of the scenario's own), then a restart
  ctrl-c      SIGINT to the whole process group of a `./scripts/run`-style start (embedded
              Valkey), as a terminal's Ctrl-C sends it, then a restart
  supervisor  `supervisorctl stop` / `start` of a program that runs it (embedded Valkey), with the
              repository's supervisor.conf settings (stopsignal=USR2)

and a frozen-Redis push (_chaos_frozen_redis.py): PUSHES pushes over HTTP while Redis is
SIGSTOPped for a few seconds; each client retries a 503 with the id the answer gave it.

Every job appends `start ID` and `end ID` to the scenario's job log. Checked: every job ran
exactly once and none was lost; attempt 1 for every job (none was stopped by a drain deadline:
the jobs are short); FIFO order in the 1-worker channel; no hand-back and no "claim reply lost";
exit code 0 at every stop; the embedded Valkey never restarted between runner restarts; each
frozen-Redis push ran once.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from scripts._chaos_checks import Report
from scripts._chaos_frozen_redis import PUSHES, Frozen, frozen_pushes
from scripts._chaos_scenario import Sizes, scenario_report
from scripts._chaos_stop_kinds import Site, open_site
from scripts._harness import KEYS

CHANNELS = {"one": 1, "five": 5}  # channel -> worker count
BACKLOG = {"one": 4, "five": 8}  # jobs pushed per cycle
JOB_S = 0.3


def cycles_for(sizes: Sizes) -> int:
    """Stops per way of stopping: 20 in a full run, 7 in --quick (21 in all), 1 in --smoke."""
    return 20 if sizes.jobs >= 10000 else 7 if sizes.jobs >= 3000 else 1


@dataclass
class Tally:
    """What one way of stopping did, over all its cycles."""

    mode: str
    runs: int = 0
    exit_codes: Counter[int] = field(default_factory=Counter)
    pushed: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    valkey_pids: set[int] = field(default_factory=set)
    logs: list[Path] = field(default_factory=list)


# -- the scenario ---------------------------------------------------------------------------------


async def scenario_lifecycle(sizes: Sizes, rng: Any) -> Report:
    cycles = cycles_for(sizes)
    report = scenario_report("lifecycle", f"stops and restarts with a backlog: usr2, ctrl-c, supervisor, "
                            f"{cycles} each; {PUSHES} pushes while Redis is frozen")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="taskrunner-chaos-lifecycle-") as tmp:
        job_log = Path(tmp) / "jobs.log"
        tallies = []
        for mode in ("usr2", "ctrl-c", "supervisor"):
            async with open_site(mode, Path(tmp) / mode) as site:
                tallies.append(await _cycles(site, cycles, job_log))
        frozen = await frozen_pushes(Path(tmp) / "frozen", job_log)
        _check(report, tallies, frozen, job_log)
        if report.violations or os.environ.get("TASKRUNNER_CHAOS_KEEP_LOGS"):
            kept = Path(tempfile.mkdtemp(prefix="taskrunner-chaos-lifecycle-kept-"))
            shutil.copytree(tmp, kept, dirs_exist_ok=True)
            report.row("logs kept in", str(kept))
    return report


async def _cycles(site: Site, cycles: int, job_log: Path) -> Tally:
    tally = Tally(site.mode)
    await site.start()
    await _create_channels(site.url())
    for cycle in range(cycles):
        await _push_backlog(site, tally, cycle, job_log)
        await _wait_some_running(site, tally)
        tally.exit_codes[await site.stop()] += 1
        tally.runs += 1
        if (pid := site.valkey_pid()) is not None:
            tally.valkey_pids.add(pid)
        await site.start()
    await _wait_all_final(site, tally)
    tally.exit_codes[await site.stop()] += 1
    tally.runs += 1
    tally.logs = site.runner_logs()
    return tally


async def _create_channels(url: str) -> None:
    async with aioredis.Redis.from_url(url) as client:
        for name, workers in CHANNELS.items():
            config = {"name": name, "distinct": False, "worker_count": workers}
            await client.hset(KEYS.channels, name, json.dumps(config))


async def _push_backlog(site: Site, tally: Tally, cycle: int, job_log: Path) -> None:
    async with aioredis.Redis.from_url(site.url()) as client:
        for channel, count in BACKLOG.items():
            for n in range(count):
                job_id = f"{site.mode}-{cycle}-{channel}-{n}"
                task = shlex.join(["sh", "-c", f"echo start {job_id} >> {job_log}; sleep {JOB_S};"
                                   f" echo end {job_id} >> {job_log}"])  # fmt: skip
                message = {"task": task, "chan": channel, "id": job_id}
                await client.lpush(KEYS.prepare_queue, json.dumps(message))
                tally.pushed[channel].append(job_id)


async def _wait_some_running(site: Site, tally: Tally) -> None:
    newest = tally.pushed["one"][-BACKLOG["one"]]
    await site.until(lambda states: states.get(newest) in ("running", "succeeded"), 20)


async def _wait_all_final(site: Site, tally: Tally) -> None:
    ids = [i for channel in tally.pushed.values() for i in channel]
    await site.until(lambda states: all(states.get(i) == "succeeded" for i in ids), ids=ids)


# -- checks ---------------------------------------------------------------------------------------


def _check(report: Report, tallies: list[Tally], frozen: Frozen, job_log: Path) -> None:
    starts = Counter(
        line.split()[1] for line in job_log.read_text().splitlines() if line.startswith("start ")
    )
    order = [line.split()[1] for line in job_log.read_text().splitlines()
             if line.startswith("start ")]  # fmt: skip
    runs = sum(t.runs for t in tallies)
    pushed = [i for t in tallies for ids in t.pushed.values() for i in ids]
    lost = [i for i in pushed if starts[i] == 0]
    double = sum(max(0, starts[i] - 1) for i in pushed)
    out_of_order = sum(_inversions([i for i in order if i in set(t.pushed["one"])],
                                   t.pushed["one"]) for t in tallies)  # fmt: skip
    texts = "".join(p.read_text(errors="replace") for t in tallies for p in t.logs if p.exists())
    handed = texts.count("handed back to channel") + texts.count("claimed but never started")
    bad_exits = sum(n for t in tallies for code, n in t.exit_codes.items() if code != 0)
    restarts = sum(max(0, len(t.valkey_pids) - 1) for t in tallies)
    frozen_runs = Counter(
        line.split()[1].rsplit("-", 1)[0] for line in job_log.read_text().splitlines()
        if line.startswith("start frozen-")
    )  # fmt: skip
    frozen_twice = sum(max(0, n - 1) for n in frozen_runs.values())
    report.row("stops and restarts", runs)
    report.row("jobs pushed in backlogs", len(pushed))
    report.row("lost (never ran)", len(lost), 0, ok=not lost)
    report.row("ran more than once", double, 0, ok=double == 0)
    report.row("out of FIFO order (1-worker channel)", out_of_order, 0, ok=out_of_order == 0)
    report.row("hand-backs or lost-claim hand-backs", handed, 0, ok=handed == 0)
    report.row("stops with an exit code other than 0", bad_exits, 0, ok=bad_exits == 0)
    report.row("embedded Valkey restarts between runner restarts", restarts, 0, ok=restarts == 0)
    report.row("frozen-Redis pushes known / ran / ran twice",
               f"{len(frozen.ids)} / {len(frozen_runs)} / {frozen_twice}", f"{PUSHES} / {PUSHES} / 0",
               ok=len(frozen.ids) == len(frozen_runs) == PUSHES and frozen_twice == 0)  # fmt: skip
    report.row("frozen-Redis push answers by status", dict(sorted(frozen.answers.items())),
               note=f"{frozen.retries} retries with the answered id")  # fmt: skip
    report.figures.update(lost=len(lost), concurrent_duplicates=0, orphans=0,
                          lifecycle_runs=runs, out_of_order=out_of_order,
                          double_runs=double + frozen_twice)  # fmt: skip


def _inversions(started: list[str], pushed: list[str]) -> int:
    """How many jobs started before one pushed earlier (adjacent pairs out of push order)."""
    rank = {job_id: n for n, job_id in enumerate(pushed)}
    ranks = [rank[i] for i in started]
    return sum(1 for a, b in itertools.pairwise(ranks) if b < a)
