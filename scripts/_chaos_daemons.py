"""Scenario "daemons" of scripts/chaos.py: jobs that leave daemons behind, under load, while
every runner is drained in turn (issue 12).

Besides the usual load, jobs that start a daemon (`sleep 300` named MARKER-daemon, so the
orphan check finds it by its argv) and end a moment later (two of each kind run as long as the
load, so drains stop them and hand them back), three kinds: `setsid` in the background, a double
fork with `setsid`, and a double fork with `setsid` and `env -i` (no environment marker). One
runner of three has no job cgroups (TASKRUNNER_JOB_CGROUPS=0), so both ways of finding them
(taskrunner/escapes.py, taskrunner/cgroups.py) run. Checked, besides what every scenario
checks: no job process alive once every job has ended, before the runners stop (and none
after, as every scenario checks), and every daemon-leaving job succeeded.
"""

from __future__ import annotations

import random

from scripts._chaos_checks import QUIET_TIMEOUT_S, Report, wait_quiet
from scripts._chaos_cluster import drain_in_turn, job_processes, load_with, settle
from scripts._chaos_jobs import plan_load
from scripts._chaos_scenario import Sizes, finish, scenario, scenario_report

DAEMONIZING = {  # the job script's mode: how its daemon is started
    "daemon-setsid": "setsid",
    "daemon-fork": "double fork + setsid",
    "daemon-clean": "double fork + setsid + env -i",
}
WITHOUT_CGROUPS = {0: {"TASKRUNNER_JOB_CGROUPS": "0"}}  # slot 0: markers only


async def scenario_daemons(sizes: Sizes, rng: random.Random) -> Report:
    report = scenario_report(
        "daemons", "jobs that leave daemons, drains in turn (3 runners, one without job cgroups)"
    )
    async with scenario("daemons", report, slot_env=WITHOUT_CGROUPS) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 3, rng)
        daemonizing = [
            cluster.run.job(f"{mode}-{i}", mode, mode=mode, chan="chaos-a",
                            sleep_s=sizes.load_s if i < 2 else rng.choice((0.02, 0.3, 1.0)))
            for mode in DAEMONIZING for i in range(sizes.misbehaving * 3)
        ]  # fmt: skip
        mixed = [*planned, *daemonizing]
        rng.shuffle(mixed)
        await load_with(cluster, mixed, sizes.load_s / 2, lambda done: drain_in_turn(cluster, done))
        report.row("runners drained and restarted", len(cluster.drains))
        await wait_quiet(cluster, QUIET_TIMEOUT_S)  # every job has ended: none may have left one
        left = await settle(lambda: len(job_processes(cluster.run.marker)), 5.0)
        report.at_most("job processes alive once every job ended", left, 0)
        outcome = await finish(cluster, report, mixed)
        for mode, how in DAEMONIZING.items():
            jobs = [p for p in daemonizing if p.kind == mode]
            ended = sum(outcome["records"].get(p.id, {}).get("state") == b"succeeded" for p in jobs)
            report.row(f"job: leaves a daemon ({how})", f"{ended} of {len(jobs)} succeeded", "all",
                       ok=ended == len(jobs))  # fmt: skip
    return report
