"""taskrunner chaos run: faults injected on loopback, the delivery guarantees checked with figures.

Twelve scenarios, each with its own Redis (AOF on, fsync always) and temp dir, its own
`taskrunner run` processes (`--lease 2`), bounded in time and stopping by itself (`--only`
takes names or numbers):

  1. kill          3 runners; every 2 s one gets SIGKILL and is restarted
  2. redis         Redis restarted (SIGTERM, then started on the same AOF) twice, SIGSTOPped once
  3. drain         SIGUSR2 drain and restart of every runner in turn, continuously
  4. hostile       random and malformed messages mixed into the prepare queue; malformed HTTP
                   requests to every endpoint (_chaos_hostile.py)
  5. misbehave     jobs that ignore SIGTERM, fork grandchildren, print 100 MB, close stdout
                   early, die by a signal
  6. slowclients   runners under `ulimit -n 256`, 300 HTTP connections on each that never finish
                   their headers, opened again as fast as they are closed; /healthz probed
  7. paused        a runner SIGSTOPped for two leases, in turn (_chaos_silence.py)
  8. pool          150 clients long-polling one runner's /api/jobs/ID/wait (_chaos_silence.py)
  9. redis-errors  Redis out of memory, then a 5 s BUSY script (_chaos_redis_errors.py)
  10. dataloss     FLUSHALL mid-load (_chaos_redis_errors.py)
  11. lifecycle    SIGUSR2, Ctrl-C to the process group and supervisor stop/start with a
                   backlog; pushes retried with their ids while Redis is frozen
                   (_chaos_lifecycle.py)
  12. daemons      jobs that leave daemons (setsid, a double fork, env -i) under load while every
                   runner is drained in turn, one runner without job cgroups (_chaos_daemons.py)

Scenarios 1-3 (and, smaller, 4-5) run the same load over several channels: short jobs, some
delayed, some in a distinct channel with dedup keys, some failing before they succeed on a retry,
some failing for good. Every job is `bash job.sh MARKER ID LOG ...`: it appends `start ID PID
PPID TIME` and `end ID PID TIME CODE` to LOG (O_APPEND, one write a line), so the log's order is
the order things happened in. Checked per scenario: every accepted job has exactly one final
state and none is lost; no two runs of one job overlap in the log; dead letters are all
accounted for; afterwards no process carrying MARKER (in its argv or environment) is alive and no
zombie is left; runner RSS stays bounded. Prints a table per scenario, then one JSON line; exits
1 if a bound is broken. Run it through `scripts/chaos` (which prepares .venv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvloop

from scripts import (
    _chaos_daemons,
    _chaos_hostile,
    _chaos_lifecycle,
    _chaos_redis_errors,
    _chaos_silence,
    _chaos_slow,
)
from scripts._chaos_checks import (
    CAPTURE_BYTES,
    JobLog,
    Report,
)
from scripts._chaos_cluster import (
    drain_in_turn,
    kill_every,
    load_with,
    log,
    redis_outages,
)
from scripts._chaos_jobs import plan_load
from scripts._chaos_scenario import (
    FULL,
    KEEP_LOGS,
    QUICK,
    SCENARIO_NAMES,
    SMOKE,
    Sizes,
    finish,
    scenario,
)
from taskrunner.guard import become_subreaper

SIGNALS = ("SEGV", "KILL", "ABRT", "USR1", "HUP")  # how misbehaving jobs end themselves


# -- the scenarios -------------------------------------------------------------------------------


async def scenario_kill(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(1, "SIGKILL a runner every 2 s, restart it (3 runners)")
    async with scenario("kill", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        await load_with(cluster, planned, sizes.load_s, lambda done: kill_every(cluster, 2.0, done))
        await finish(cluster, report, planned)
    return report


async def scenario_redis(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(
        2, f"Redis restarted twice, SIGSTOPped {sizes.redis_stop_s:g} s once (3 runners)"
    )
    async with scenario("redis", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        outages = asyncio.create_task(redis_outages(cluster, sizes.load_s, sizes.redis_stop_s))
        await load_with(cluster, planned, sizes.load_s)
        await outages
        outcome = await finish(cluster, report, planned)
        resumed = [_first_start_after(outcome["log"], up) - up for _, up in cluster.outages]
        report.row("Redis outages", len(cluster.outages))
        report.row(
            "longest wait for a job start after Redis came back", f"{max(resumed, default=0):.2f} s"
        )
    return report


def _first_start_after(jobs: JobLog, at: float) -> float:
    return min((r.start for runs in jobs.runs.values() for r in runs if r.start > at), default=at)


async def scenario_drain(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(3, "SIGUSR2 drain and restart of every runner in turn (3 runners)")
    async with scenario("drain", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        await load_with(cluster, planned, sizes.load_s, lambda done: drain_in_turn(cluster, done))
        report.row("runners drained and restarted", len(cluster.drains))
        await finish(cluster, report, planned)
    return report


MISBEHAVING = {  # mode: (what, message fields, sleep s)
    "term": ("ignore SIGTERM past a 0.3 s timeout", {"timeout": 0.3}, 3.0),
    "fork": ("fork grandchildren that outlive it", {}, 0.02),
    "escape": ("a grandchild leaves the group (setsid)", {}, 0.5),
    "close": ("close stdout and stderr early", {}, 0.05),
    "signal": ("exit by a signal", {}, 0.02),
    "spew": ("print 100 MB", {}, 0.0),
}


async def scenario_misbehave(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(5, "jobs that misbehave (3 runners)")
    async with scenario("misbehave", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 6, rng)
        bad = []
        for mode, (_, fields, sleep_s) in MISBEHAVING.items():
            for i in range(sizes.spew if mode == "spew" else sizes.misbehaving):
                how = f"signal:{SIGNALS[i % len(SIGNALS)]}" if mode == "signal" else mode
                bad.append(cluster.run.job(f"{mode}-{i}", mode, mode=how, sleep_s=sleep_s,
                                           chan="chaos-a", **fields))  # fmt: skip
        mixed = [*planned, *bad]
        rng.shuffle(mixed)
        await load_with(cluster, mixed, sizes.load_s / 3)
        outcome = await finish(cluster, report, mixed)
        for mode, (what, _, _) in MISBEHAVING.items():
            jobs = [p for p in bad if p.kind == mode]
            wrong = [p.id for p in jobs if not _behaved(mode, outcome["records"].get(p.id, {}))]
            ended = f"{len(jobs) - len(wrong)} of {len(jobs)} ended as expected"
            report.row(f"job: {what}", ended, "all", ok=not wrong)
    return report


def _behaved(mode: str, record: dict[str, bytes]) -> bool:
    state, error = record.get("state", b"").decode(), record.get("error", b"").decode()
    if mode == "term":
        return state == "failed" and record.get("signal") == b"9" and "timed out" in error
    if mode == "signal":
        return (
            state == "failed"
            and record.get("exit_code") == b""
            and record.get("signal", b"") != b""
        )
    if mode == "spew":
        stdout = record.get("stdout", b"")
        return (
            state == "succeeded"
            and record.get("stdout_truncated") == b"1"
            and len(stdout) <= CAPTURE_BYTES
        )
    return state == "succeeded"


async def scenario_slowclients(sizes: Sizes, rng: random.Random) -> Report:
    number = list(SCENARIOS).index("slowclients") + 1
    report = Report(
        number,
        f"{_chaos_slow.SLOW_PER_RUNNER} slow-header HTTP connections on each runner,"
        f" ulimit -n {_chaos_slow.NOFILE} (3 runners)",
    )
    async with scenario(
        "slowclients", report, flags=_chaos_slow.RUNNER_FLAGS, nofile=_chaos_slow.NOFILE
    ) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 2, rng)
        attacks: list[_chaos_slow.Attack] = []

        async def attack(done: asyncio.Event) -> None:
            attacks.append(await _chaos_slow.slow_attack(cluster, done))

        await load_with(cluster, planned, max(sizes.load_s / 2, 3 * _chaos_slow.READ_TIMEOUT_S),
                        attack)  # fmt: skip
        outcome = await finish(cluster, report, planned)
        _chaos_slow.check_attack(report, attacks[0], outcome, cluster)
    return report


# Scenario name -> its function; `--only` takes names or their 1-based numbers in this order.
SCENARIOS: dict[str, Callable[[Sizes, random.Random], Awaitable[Report]]] = dict(
    zip(
        SCENARIO_NAMES,  # the same order: a scenario's number is its place there
        (
            scenario_kill,
            scenario_redis,
            scenario_drain,
            _chaos_hostile.scenario_hostile,
            scenario_misbehave,
            scenario_slowclients,
            _chaos_silence.scenario_paused,
            _chaos_silence.scenario_pool,
            _chaos_redis_errors.scenario_redis_errors,
            _chaos_redis_errors.scenario_dataloss,
            _chaos_lifecycle.scenario_lifecycle,
            _chaos_daemons.scenario_daemons,
        ),
        strict=True,
    )
)


# -- the run -------------------------------------------------------------------------------------


async def run(sizes: Sizes, only: Sequence[int], seed: int) -> list[Report]:
    become_subreaper(os.getpid())  # orphans of killed runners come to us, and we reap them
    reports = []
    names = list(SCENARIOS)
    for number in only:
        rng = random.Random(seed * 10 + number)
        log(f"scenario {number} ({names[number - 1]}) of {len(SCENARIOS)}: starting")
        started = time.monotonic()
        report = await SCENARIOS[names[number - 1]](sizes, rng)
        report.title += f", {time.monotonic() - started:.0f} s"
        print_report(report)
        reports.append(report)
    return reports


def print_report(report: Report) -> None:
    print(f"scenario {report.number}: {report.title}")
    for label, value in report.rows:
        print(f"  {label:<52} {value}")
    print(flush=True)


def summary(reports: Sequence[Report]) -> dict[str, Any]:
    def total(key: str) -> int:
        return int(sum(r.figures.get(key, 0) for r in reports))

    return {
        "lost": total("lost"),
        "concurrent_duplicates": total("concurrent_duplicates"),
        "orphans": total("orphans"),
        "max_recovery_s": round(
            max((r.figures.get("max_recovery_s", 0.0) for r in reports), default=0.0), 2
        ),
        "lifecycle_runs": total("lifecycle_runs"),
        "out_of_order": total("out_of_order"),
        "double_runs": total("double_runs"),
        "scenarios": len(reports),
    }


def scenario_numbers(text: str, parser: argparse.ArgumentParser) -> list[int]:
    """`--only` as 1-based numbers: each item a scenario's name or number; empty: all."""
    names = list(SCENARIOS)
    numbers = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item in names:
            numbers.append(names.index(item) + 1)
        elif item.isdigit() and 1 <= int(item) <= len(names):
            numbers.append(int(item))
        else:
            parser.error(f"--only: no scenario {item!r}; the scenarios are {', '.join(names)}")
    return numbers or list(range(1, len(names) + 1))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller runs: under 5 minutes")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # CI: tiny sizes
    parser.add_argument(
        "--only",
        default="",
        help=f"scenarios to run by name or number, e.g. kill,4 (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the load and hostile input")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep every scenario's logs (else only failed)"
    )
    args = parser.parse_args(argv)
    if args.keep_logs:
        os.environ[KEEP_LOGS] = "1"
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    only = scenario_numbers(args.only, parser)
    started = time.monotonic()
    reports = uvloop.run(run(sizes, only, args.seed))
    violations = [v for r in reports for v in r.violations]
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"taskrunner chaos ({mode}, {os.cpu_count()} cores, {time.monotonic() - started:.0f} s):"
          f" {'every bound held' if not violations else f'{len(violations)} bounds broken'}")  # fmt: skip
    for violation in violations:
        print(f"  BROKEN {violation}")
    print(json.dumps(summary(reports)))
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
