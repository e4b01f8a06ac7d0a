"""The jobs scripts/chaos.py runs: one bash script that logs its start and end, the mixed
load, and the channels it runs in."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHANNELS = {  # name: (distinct, worker_count)
    "chaos-a": (False, 10),
    "chaos-b": (True, 10),
    "chaos-c": (False, 4),
}
DEFAULT_CHANNELS = ("default",)  # the runners add it; not biz and cron: channels exist already
JOB_SCRIPT = r"""# chaos job: $1 marker, $2 id, $3 log, $4 state dir, $5 mode, $6 seconds
id=$2 log=$3 mode=$5
export CHAOS_RUN="$1"
trap 'printf "end %s %s %s 143\n" "$id" "$$" "$EPOCHREALTIME" >> "$log"; exit 143' TERM
printf 'start %s %s %s %s\n' "$id" "$$" "$PPID" "$EPOCHREALTIME" >> "$log"
code=0
case $mode in
  fail:*) n=0; [ -f "$4/$id" ] && read -r n < "$4/$id"; echo $((n + 1)) > "$4/$id"
          [ "$n" -lt "${mode#fail:}" ] && code=1 ;;
  term) trap '' TERM ;;
  fork) sleep 30 & ( sleep 30 & ) ; ( trap '' TERM; sleep 30 ) & ;;
  escape) setsid sleep "$6" & ;;
  daemon-setsid) setsid bash -c 'exec -a "$0" sleep 300' "$1-daemon" & ;;
  daemon-fork) ( setsid bash -c 'exec -a "$0" sleep 300' "$1-daemon" & ) ;;
  daemon-clean) ( setsid env -i bash -c 'exec -a "$0" sleep 300' "$1-daemon" & ) ;;
  spew) head -c 100000000 /dev/zero ;;
  close) exec 1>&- 2>&- ;;
esac
sleep "$6"
printf 'end %s %s %s %s\n' "$id" "$$" "$EPOCHREALTIME" "$code" >> "$log"
case $mode in signal:*) kill -s "${mode#signal:}" $$ ;; close) exit 0 ;; esac
echo "$id"
exit "$code"
"""


# -- the jobs ------------------------------------------------------------------------------------


@dataclass
class Planned:
    """One job the harness pushes, and what it expects of it."""

    id: str
    kind: str  # ok, delayed, flaky, doomed, unique, contended, or a misbehaving mode
    message: bytes
    delay_s: float = 0.0
    pushed_at: float = 0.0


@dataclass(frozen=True)
class Run:
    """One scenario's files and the marker every one of its job processes carries."""

    name: str
    workdir: Path
    marker: str

    @property
    def log(self) -> Path:
        return self.workdir / "jobs.log"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def script(self) -> Path:
        return self.workdir / "job.sh"

    def prepare(self) -> None:
        self.state.mkdir()
        self.script.write_text(JOB_SCRIPT)
        self.log.touch()

    def job(
        self, job_id: str, kind: str, *, mode: str = "ok", sleep_s: float = 0.02, **fields: Any
    ) -> Planned:
        args = [str(self.script), self.marker, job_id, str(self.log), str(self.state), mode]
        message = {"task": "bash", "args": [*args, f"{sleep_s:g}"], "id": job_id, **fields}
        return Planned(job_id, kind, json.dumps(message).encode(), fields.get("delay", 0.0))


RETRY = {"retry_intervals": "0.2 0.5"}


def _ok(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    chan = rng.choice(("chaos-a", "chaos-c"))
    return [run.job(f"ok-{i}", "ok", chan=chan, sleep_s=sleep_s)]


def _delayed(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    delay, chan = round(rng.uniform(0.1, 3.0), 3), rng.choice(tuple(CHANNELS))
    return [run.job(f"later-{i}", "delayed", chan=chan, delay=delay, sleep_s=sleep_s)]


def _flaky(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    """Fails its first one or two runs, then succeeds on a retry."""
    fail = rng.choice((1, 2))
    return [
        run.job(f"flaky-{i}", "flaky", mode=f"fail:{fail}", chan="chaos-a", retries=fail + 2,
                sleep_s=sleep_s, **RETRY)
    ]  # fmt: skip


def _doomed(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    """Fails every run: dead after its retries."""
    return [
        run.job(f"doomed-{i}", "doomed", mode="fail:999", chan="chaos-c", retries=2,
                sleep_s=sleep_s, **RETRY)
    ]  # fmt: skip


def _unique(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    return [run.job(f"uniq-{i}", "unique", chan="chaos-b", dedup_key=f"k{i}", sleep_s=sleep_s)]


def _contended(run: Run, i: int, rng: random.Random, sleep_s: float) -> list[Planned]:
    """Two jobs with one dedup key: the second is refused while the first is live."""
    return [
        run.job(f"pair-{i}-{side}", "contended", chan="chaos-b", dedup_key=f"pair{i}",
                sleep_s=sleep_s)
        for side in "xy"
    ]  # fmt: skip


# (share of the load, how to make it)
MIX = ((0.50, _ok), (0.15, _delayed), (0.10, _flaky), (0.05, _doomed), (0.12, _unique),
       (0.08, _contended))  # fmt: skip


def plan_load(run: Run, n: int, rng: random.Random, *, contended: bool = True) -> list[Planned]:
    """The mixed load: mostly short jobs, some delayed, distinct, retried or failing for good
    (without `contended`, jobs sharing a dedup key are made unique instead)."""
    makers = [make if contended or make is not _contended else _unique for _, make in MIX]
    weights = [share for share, _ in MIX]
    planned: list[Planned] = []
    for i in range(n):
        [make] = rng.choices(makers, weights)
        planned += make(run, i, rng, rng.choice((0.01, 0.02, 0.03)))
    return planned
