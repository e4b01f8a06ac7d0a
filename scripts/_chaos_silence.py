"""Scenarios "paused" and "pool" of scripts/chaos.py: a runner alive but silent (issue 12).

paused  3 runners under load; every few seconds one is SIGSTOPped for two leases, then SIGCONT.
        The others declare it lost and run its jobs again; its watchdog must have stopped them
        first. Checked, besides what every scenario checks (no job lost, none run twice at
        once): every job process a paused runner held ended before its lease could run out (the
        job log's end line, against the moment of the SIGSTOP plus the lease), and the runner
        carries on after SIGCONT (no crash, no traceback).
pool    2 runners under load; POLL_CLIENTS clients loop on `GET /api/jobs/ID/wait` against the
        first one, more than its HTTP pool of Redis connections. Checked: every wait answers
        200 or 503, and no runner is ever declared lost (its heartbeat has its own connection).

Each scenario has its name in _chaos_scenario.SCENARIO_NAMES and its function in chaos.SCENARIOS;
the scenario plumbing (`scenario`, `finish`) comes from _chaos_scenario.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field

import aiohttp

from scripts._chaos_checks import JobLog, Report
from scripts._chaos_cluster import LEASE_S, Cluster, Kill, Slot, load_with, log
from scripts._chaos_jobs import Planned, plan_load
from scripts._chaos_scenario import Sizes, finish, scenario, scenario_report
from scripts._harness import KEYS

PAUSE_S = 2 * LEASE_S  # long enough for the others to declare the paused runner lost
PAUSE_EVERY_S = 1.0  # between one runner's SIGCONT and the next one's SIGSTOP
POLL_CLIENTS = 150  # the figure: more than the runner's HTTP pool of Redis connections
POLL_WAIT_S = 2.0  # each long poll's `timeout`
BUSY_PAUSE_S = 0.2  # a client answered 503 waits this long before it asks again
FENCE_LINE = "taskrunner watchdog: no heartbeat for"
DECLARED_LINE = "this runner was declared dead"


def _count_lines(slots: list[Slot], text: str) -> int:
    return sum(
        slot.log.read_text(errors="replace").count(text) for slot in slots if slot.log.exists()
    )


# -- paused ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    pid: int  # the runner paused
    at: float  # time.time() just before SIGSTOP
    until: float  # just after SIGCONT


async def scenario_paused(sizes: Sizes, rng: random.Random) -> Report:
    report = scenario_report(
        "paused",
        f"SIGSTOP a runner for {PAUSE_S:g} s (2 leases), then SIGCONT, in turn (3 runners)",
    )
    async with scenario("paused", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        pauses: list[Pause] = []
        await load_with(cluster, planned, sizes.load_s, lambda done: _pause(cluster, done, pauses))
        outcome = await finish(cluster, report, planned)
        late = _outlived_lease(outcome["log"], pauses)
        report.row("runners paused past their lease", len(pauses))
        report.row(
            "watchdog silence fences (job groups stopped)", _count_lines(cluster.slots, FENCE_LINE)
        )
        report.row(
            "paused runners told they were lost, rejoined",
            _count_lines(cluster.slots, DECLARED_LINE),
        )
        report.at_most("job runs of a paused runner that outlived its lease", len(late), 0)
        report.violations += [
            f"scenario {report.number}: outlived the lease: {r}" for r in late[:5]
        ]
    return report


async def _pause(cluster: Cluster, done: asyncio.Event, pauses: list[Pause]) -> None:
    """SIGSTOP one runner for PAUSE_S, then SIGCONT; the next one after PAUSE_EVERY_S; until
    `done`. Each pause counts as a lost runner for the recovery figures (cluster.kills)."""
    turn = 0
    while not done.is_set():
        await asyncio.sleep(PAUSE_EVERY_S)
        slot = cluster.slots[turn % len(cluster.slots)]
        turn += 1
        if slot.proc is None or slot.proc.poll() is not None:
            continue
        pid = slot.proc.pid
        runner_id = await cluster.runner_id(pid)
        owned = await cluster.jobs_of(runner_id)
        at = time.time()
        os.kill(pid, signal.SIGSTOP)
        log(
            f"runner {slot.index} (pid {pid}) SIGSTOPped for {PAUSE_S:g} s holding {len(owned)} jobs"
        )
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        pauses.append(Pause(pid, at, time.time()))
        cluster.kills.append(Kill(at, runner_id, owned))


def _outlived_lease(jobs: JobLog, pauses: list[Pause]) -> list[str]:
    """Runs of a paused runner's jobs (their parent is the runner) that were running when it
    was paused and ended later than a lease after (or never logged their end)."""
    late = []
    for job_id, runs in jobs.runs.items():
        for run in runs:
            for pause in pauses:
                if run.ppid != pause.pid or run.start >= pause.at:
                    continue
                if run.end is not None and run.end <= pause.at:
                    continue  # ended before the pause
                if run.end is None or run.end > pause.at + LEASE_S:
                    ended = "never" if run.end is None else f"{run.end - pause.at:.2f} s after"
                    late.append(f"{job_id} pid {run.pid}: ended {ended} the SIGSTOP")
    return late


# -- pool --------------------------------------------------------------------------------------------


@dataclass
class Polls:
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    failures: list[str] = field(default_factory=list)  # no answer, or one other than 200/503
    # A kept-alive connection the runner closed as it was reused (aiohttp's race): asked again.
    disconnects: int = 0


async def scenario_pool(sizes: Sizes, rng: random.Random) -> Report:
    report = scenario_report(
        "pool",
        f"{POLL_CLIENTS} clients long-polling GET /api/jobs/ID/wait on one runner (2 runners)",
    )
    async with scenario("pool", report, n_runners=2) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 2, rng)
        polls = Polls()
        port = cluster.slots[0].port
        await load_with(
            cluster,
            planned,
            sizes.load_s,
            lambda done: _long_polls(cluster, port, planned, done, polls),
        )
        await finish(cluster, report, planned)
        answers = polls.answers
        report.row(
            "long polls answered 200 / 503", f"{answers.get(200, 0):,} / {answers.get(503, 0):,}"
        )
        report.at_most("long polls answered otherwise, or not at all", len(polls.failures), 0)
        report.row("  kept-alive connections found closed (asked again)", polls.disconnects)
        for failure in polls.failures[:3]:
            report.row("  long poll without an answer", failure)
        report.violations += [f"scenario {report.number}: {f}" for f in polls.failures[:3]]
        report.at_most(
            "runners declared lost while alive", _count_lines(cluster.slots, DECLARED_LINE), 0
        )
        report.row("watchdog silence fences", _count_lines(cluster.slots, FENCE_LINE))
    return report


async def _long_polls(
    cluster: Cluster, port: int, planned: list[Planned], done: asyncio.Event, polls: Polls
) -> None:
    admitted = _Admitted([p for p in planned if p.kind != "contended"])  # (those may be refused)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=POLL_WAIT_S + 30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [
            asyncio.create_task(_poll(session, port, admitted, done, polls, random.Random(n)))
            for n in range(POLL_CLIENTS)
        ]
        clients.append(asyncio.create_task(admitted.follow(cluster, done)))
        await asyncio.gather(*clients)


class _Admitted:
    """The jobs a runner has admitted so far (their record exists): a job still in the prepare
    queue is rightly answered 404, so the clients poll only these."""

    def __init__(self, planned: list[Planned]) -> None:
        self.planned = planned
        self.jobs: list[Planned] = []

    async def follow(self, cluster: Cluster, done: asyncio.Event) -> None:
        waiting = list(self.planned)
        while waiting and not done.is_set():
            pushed = [p for p in waiting if p.pushed_at]
            if pushed:
                found = await cluster.client.eval(
                    "local n = {} for i, k in ipairs(KEYS) do n[i] = redis.call('EXISTS', k) end"
                    " return n",
                    len(pushed),
                    *(KEYS.job(p.id) for p in pushed),
                )
                seen = {p.id for p, there in zip(pushed, found, strict=True) if there}
                self.jobs += [p for p in pushed if p.id in seen]
                waiting = [p for p in waiting if p.id not in seen]
            await asyncio.sleep(0.05)

    def pick(self, rng: random.Random) -> Planned | None:
        return self.jobs[rng.randrange(len(self.jobs))] if self.jobs else None


async def _poll(
    session: aiohttp.ClientSession,
    port: int,
    pushed: _Admitted,
    done: asyncio.Event,
    polls: Polls,
    rng: random.Random,
) -> None:
    while not done.is_set():
        job = pushed.pick(rng)
        if job is None:
            await asyncio.sleep(0.05)
            continue
        url = f"http://127.0.0.1:{port}/api/jobs/{job.id}/wait?timeout={POLL_WAIT_S:g}"
        try:
            async with session.get(url) as resp:
                body = await resp.read()
                polls.answers[resp.status] = polls.answers.get(resp.status, 0) + 1
                if resp.status not in (200, 503):
                    polls.failures.append(f"HTTP {resp.status} for {job.id}: {body[:200]!r}")
                if resp.status == 503:
                    await asyncio.sleep(BUSY_PAUSE_S)
        except aiohttp.ServerDisconnectedError:
            polls.disconnects += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            polls.failures.append(repr(exc))
            await asyncio.sleep(BUSY_PAUSE_S)
