"""taskrunner chaos run: faults injected on loopback, the delivery guarantees checked with figures.

Twelve scenarios, each with its own Redis (AOF on, fsync always) and temp dir, its own
`taskrunner run` processes (`--lease 2`), bounded in time and stopping by itself (`--only`
takes names or numbers):

  1. kill          3 runners; every 2 s one gets SIGKILL and is restarted
  2. redis         Redis restarted (SIGTERM, then started on the same AOF) twice, SIGSTOPped once
  3. drain         SIGUSR2 drain and restart of every runner in turn, continuously
  4. hostile       random and malformed messages mixed into the prepare queue; malformed HTTP
                   requests to every endpoint
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
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import _chaos_daemons
import _chaos_lifecycle
import _chaos_redis_errors
import _chaos_silence
import _chaos_slow
import aiohttp
import uvloop
from _chaos_checks import (
    CAPTURE_BYTES,
    QUIET_TIMEOUT_S,
    RSS_BOUND_MB,
    JobLog,
    Report,
    check_jobs,
    daily_finals,
    records,
    runner_log_errors,
    wait_quiet,
)
from _chaos_cluster import (
    Cluster,
    drain_in_turn,
    job_processes,
    kill_every,
    load_with,
    log,
    redis_outages,
    settle,
    zombies_under,
)
from _chaos_jobs import CHANNELS, DEFAULT_CHANNELS, Planned, Run, plan_load
from _harness import (
    FINAL,
    KEYS,
    redis_server,
    wait_http,
)
from _hostile import RAW_REQUESTS, HostileMessages, Request, hostile_messages, http_requests

from taskrunner.guard import become_subreaper, zombie_children

KEEP_LOGS = "TASKRUNNER_CHAOS_KEEP_LOGS"  # set (--keep-logs): keep every scenario's logs
SIGNALS = ("SEGV", "KILL", "ABRT", "USR1", "HUP")  # how misbehaving jobs end themselves


@dataclass(frozen=True)
class Sizes:
    jobs: int  # jobs of the load in scenarios 1-3
    load_s: float  # seconds the load is pushed over (faults go on meanwhile)
    hostile: int  # hostile prepare-queue messages (scenario 4)
    http: int  # hostile HTTP requests (scenario 4)
    misbehaving: int  # jobs of each misbehaving kind (scenario 5)
    spew: int  # jobs printing 100 MB (scenario 5)
    redis_stop_s: float  # how long Redis is SIGSTOPped (scenario 2)


SMOKE = Sizes(jobs=200, load_s=4, hostile=300, http=150, misbehaving=2, spew=1, redis_stop_s=3)
QUICK = Sizes(jobs=3000, load_s=15, hostile=3000, http=1000, misbehaving=8, spew=3, redis_stop_s=10)
FULL = Sizes(
    jobs=10000, load_s=40, hostile=10000, http=3000, misbehaving=20, spew=6, redis_stop_s=10
)


# -- one scenario --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scenario(
    name: str, report: Report, n_runners: int = 3, **options: Any
) -> AsyncIterator[Cluster]:
    """A temp dir, a Redis with AOF on, the channels, and `n_runners` runners (`options` go to
    `Cluster`); torn down after, the logs kept if a bound was broken."""
    with tempfile.TemporaryDirectory(prefix=f"taskrunner-chaos-{name}-") as tmp:
        run = Run(name, Path(tmp), f"chaos-{name}-{secrets.token_hex(4)}")
        run.prepare()
        with redis_server(Path(tmp) / "redis", appendonly=True) as server:
            cluster = Cluster(run, server, n_runners, **options)
            await cluster.start()
            failed = True
            try:
                yield cluster
                failed = bool(report.violations)
            finally:
                await cluster.stop()
                if failed or os.environ.get(KEEP_LOGS):
                    keep_logs(run)
                for pid in job_processes(run.marker):  # never leave one behind
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


def keep_logs(run: Run) -> None:
    """Copy the runners' logs, the job log and Redis's log somewhere that outlives the temp dir."""
    kept = Path(tempfile.mkdtemp(prefix=f"taskrunner-chaos-{run.name}-logs-"))
    with contextlib.suppress(OSError):
        shutil.copy(run.workdir / "redis" / "server.log", kept / "redis.log")
    for path in run.workdir.glob("*.log"):
        shutil.copy(path, kept / path.name)
    log(f"logs of scenario {run.name}: {kept}")


async def finish(cluster: Cluster, report: Report, planned: Sequence[Planned]) -> dict[str, Any]:
    """Wait for quiet, stop the runners, and check what every scenario must show. Returns the
    job records (for scenario-specific checks)."""
    for slot in cluster.slots:  # a runner restarted just now must be up before it is stopped
        await wait_http(slot.port)
    took = await wait_quiet(cluster, QUIET_TIMEOUT_S)
    report.row("time to quiet after the load", f"{took:.1f} s")
    zombies = await settle(lambda: zombies_under(cluster.runner_pids()), 7.0)
    found = await records(cluster.client)
    stats = {k.decode(): int(v) for k, v in (await cluster.client.hgetall(KEYS.stats)).items()}
    finals = await daily_finals(cluster.client)
    codes = await cluster.stop()
    orphans = await settle(lambda: len(job_processes(cluster.run.marker)), 5.0)
    jobs = JobLog.read(cluster.run.log, cluster.health.reaped_at)
    check_jobs(report, planned, found, stats, jobs, cluster)
    stuck = sum(r.get("state", b"").decode() not in FINAL for r in found.values())
    report.at_most("jobs not in a final state (stuck)", stuck, 0)
    final_count = len(found) - stuck
    report.row(
        "final states recorded (daily counters)",
        finals,
        f"{final_count:,}",
        ok=finals == final_count,
    )
    report.at_most("concurrent duplicates observed", len(jobs.overlaps), 0)
    report.violations += [
        f"scenario {report.number}: ran twice at once: {o}" for o in jobs.overlaps[:5]
    ]
    report.at_most("orphan processes after the run", orphans, 0)
    report.at_most("zombies left under runners", zombies, 0)
    report.at_most("zombies left under the harness", len(zombie_children()), 0)
    report.row("orphans of killed runners reaped", cluster.health.adopted)
    report.at_most("runner RSS max", cluster.health.rss_max_mb, RSS_BOUND_MB, " MB")
    crashes = cluster.health.crashes + [
        f"exit code {c} on stop/drain" for c in [*cluster.drains, *codes] if c
    ]
    report.at_most("runner crashes / bad exit codes", len(crashes), 0)
    report.violations += [f"scenario {report.number}: {c}" for c in crashes[:5]]
    tracebacks, errors = runner_log_errors(cluster.slots)
    report.at_most("tracebacks in runner logs", tracebacks, 0)
    for line in errors:
        report.row("  runner ERROR line", line)
    report.figures.update(
        concurrent_duplicates=len(jobs.overlaps), orphans=orphans, stuck=stuck,
    )  # fmt: skip
    return {"records": found, "stats": stats, "log": jobs}


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


async def scenario_hostile(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(4, "hostile input: prepare queue and HTTP (3 runners)")
    known = [*DEFAULT_CHANNELS, *CHANNELS]
    log(f"drawing {sizes.hostile:,} hostile messages and {sizes.http:,} HTTP requests (hypothesis)")
    hostile = await asyncio.to_thread(
        hostile_messages, sizes.hostile, channels=known, default_channel="default",
        seed=rng.randrange(2**32), id_prefix="h-",
    )  # fmt: skip
    requests = await asyncio.to_thread(
        http_requests, sizes.http, channels=known, seed=rng.randrange(2**32), id_prefix="w-"
    )
    async with scenario("hostile", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 3, rng, contended=False)
        mixed: list[Planned | bytes] = [*planned, *hostile.raw]
        rng.shuffle(mixed)
        http = asyncio.create_task(send_hostile_http(cluster, requests))
        await load_with(cluster, mixed, sizes.load_s)
        answers = await http
        report.figures["refused_planned"] = 0
        outcome = await finish(cluster, report, planned)
        check_hostile(report, hostile, answers, outcome, {p.id for p in planned})
    return report


UNPARSEABLE_METHODS = frozenset({"FOO"})  # aiohttp's parser knows the standard ones only


@dataclass
class Answers:
    """What the runners answered to hostile HTTP requests."""

    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    no_answer: list[str] = field(default_factory=list)
    created: set[str] = field(default_factory=set)  # job ids of accepted requests
    refused: int = 0  # requests refused as duplicates of live jobs
    unsendable: int = 0  # requests aiohttp's client refuses to send
    closed: int = 0  # connections closed on a method the server cannot parse


async def send_hostile_http(cluster: Cluster, requests: Sequence[Request]) -> Answers:
    answers = Answers()
    ports = [s.port for s in cluster.slots]
    queue = list(enumerate(requests))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

        async def worker() -> None:
            while queue:
                i, request = queue.pop()
                await send_one(session, ports[i % len(ports)], request, answers)

        await asyncio.gather(*(worker() for _ in range(16)))
    raws = enumerate(RAW_REQUESTS * 2)
    await asyncio.gather(*(send_raw(ports[i % len(ports)], raw, answers) for i, raw in raws))
    return answers


async def send_one(
    session: aiohttp.ClientSession, port: int, request: Request, answers: Answers
) -> None:
    url = f"http://127.0.0.1:{port}{request.path}"
    what = f"{request.method} {request.path[:80]} {request.headers} {(request.body or b'')[:80]!r}"
    try:
        data: Any = request.body if request.form is None else _form(request.form)
        async with session.request(
            request.method, url, params=request.query, headers=request.headers, data=data,
            skip_auto_headers=("Content-Type",) if "Content-Type" in request.headers else (),
        ) as response:  # fmt: skip
            body = await response.read()
    except ValueError:  # the client itself refuses to send it (e.g. a control character)
        answers.unsendable += 1
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        if request.method in UNPARSEABLE_METHODS:  # 400 and close, maybe before the body is sent
            answers.closed += 1
        else:
            answers.no_answer.append(f"{what}: {exc!r}")
        return
    answers.statuses[response.status] += 1
    if response.status >= 500:
        answers.server_errors.append(f"{response.status} {what}: {body[:200]!r}")
    elif response.status < 300 and request.creates:
        try:
            _note_created(request.creates, body, answers)
        except (ValueError, KeyError, TypeError):
            answers.server_errors.append(
                f"unreadable {response.status} answer to {what}: {body[:200]!r}"
            )
    elif response.status == 409 and request.creates == "native" and b"duplicate_of" in body:
        answers.refused += 1


def _form(fields: dict[str, str]) -> aiohttp.FormData:
    """A multipart body (aiohttp's client cannot send a non-ASCII field name: quoted)."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name if name.isascii() else quote(name), value)
    form.add_field("upload", b"\x00\x01", filename="x.bin")
    return form


def _note_created(api: str, body: bytes, answers: Answers) -> None:
    data = json.loads(body)
    if api == "kingtask" and isinstance(data, str):
        answers.created.add(data)
    elif api == "native":
        answers.created.add(data["id"])
    elif api == "push" and data["data"]["result"]:
        answers.created.add(data["data"]["id"])
    elif api == "push":
        answers.refused += 1


async def send_raw(port: int, payload: bytes, answers: Answers) -> None:
    """A request malformed at the protocol level: any answer but a 5xx is fine."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        answers.no_answer.append(f"raw {payload[:40]!r}: cannot connect: {exc}")
        return
    try:
        writer.write(payload)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 3)  # some wait for a body: none comes
    except (OSError, TimeoutError):
        status = b""
    finally:
        writer.close()
    if status.startswith(b"HTTP/1.1 5") or status.startswith(b"HTTP/1.0 5"):
        answers.server_errors.append(f"raw {payload[:60]!r}: {status!r}")
    elif status[:5] == b"HTTP/":
        answers.statuses[int(status.split()[1])] += 1


def check_hostile(
    report: Report, hostile: HostileMessages, answers: Answers, outcome: dict[str, Any],
    planned_ids: set[str],
) -> None:  # fmt: skip
    found: dict[str, Any] = outcome["records"]
    stats = outcome["stats"]
    report.row(
        "hostile messages pushed (valid / invalid)",
        f"{len(hostile.raw):,} ({hostile.valid:,} / {hostile.invalid:,})",
    )
    dead = stats.get("dead_letters", 0)
    report.row(
        "dead-lettered", dead, f"== invalid: {hostile.invalid:,}", ok=dead == hostile.invalid
    )
    hostile_jobs = len(set(found) - planned_ids - answers.created)
    refused = stats.get("refused", 0) - answers.refused
    unaccounted = hostile.valid - hostile_jobs - refused
    report.row("valid hostile messages: jobs + refused duplicates", f"{hostile_jobs:,} + {refused:,}",
               f"== valid: {hostile.valid:,}", ok=unaccounted == 0)  # fmt: skip
    report.figures["lost"] = report.figures.get("lost", 0) + max(0, unaccounted)
    report.row(
        "HTTP requests (2xx / 4xx / 5xx)",
        _status_summary(answers.statuses),
        note=f"{answers.unsendable} the client would not send, {answers.closed} unknown"
        " methods answered by closing the connection",
    )
    report.at_most("HTTP 5xx answers", len(answers.server_errors), 0)
    report.at_most("HTTP requests with no answer", len(answers.no_answer), 0)
    report.row("jobs created through hostile HTTP", len(answers.created))
    report.violations += [
        f"scenario 4: {e}" for e in (answers.server_errors + answers.no_answer)[:8]
    ]


def _status_summary(statuses: Counter[int]) -> str:
    classes = Counter[int]()
    for status, n in statuses.items():
        classes[status // 100] += n
    return f"{sum(statuses.values()):,} ({classes[2]:,} / {classes[4]:,} / {classes[5]:,})"


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
SCENARIOS: dict[str, Any] = {
    "kill": scenario_kill,
    "redis": scenario_redis,
    "drain": scenario_drain,
    "hostile": scenario_hostile,
    "misbehave": scenario_misbehave,
    "slowclients": scenario_slowclients,
    "paused": _chaos_silence.scenario_paused,
    "pool": _chaos_silence.scenario_pool,
    "redis-errors": _chaos_redis_errors.scenario_redis_errors,
    "dataloss": _chaos_redis_errors.scenario_dataloss,
    "lifecycle": _chaos_lifecycle.scenario_lifecycle,
    "daemons": _chaos_daemons.scenario_daemons,
}


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
