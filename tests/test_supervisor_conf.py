"""supervisor.conf lets the runner drain: USR2 starts it, stopwaitsecs outlasts it."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parent.parent / "supervisor.conf"
DRAIN_TIMEOUT_S = 50  # the runner's --drain-timeout default
KILL_GRACE_S = 5  # SIGTERM to SIGKILL for jobs left at the end of the drain


@pytest.fixture(scope="module")
def program() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(CONF.read_text(encoding="utf-8"), source=str(CONF))
    return parser["program:task-runner"]


def test_stops_with_usr2_and_waits_longer_than_the_drain(
    program: configparser.SectionProxy,
) -> None:
    assert program["stopsignal"] == "USR2"
    assert int(program["stopwaitsecs"]) > DRAIN_TIMEOUT_S + KILL_GRACE_S


def test_signals_only_the_runner_not_its_jobs(program: configparser.SectionProxy) -> None:
    assert program.getboolean("stopasgroup") is False
    assert program.getboolean("killasgroup") is False


def test_runs_the_upstream_compatible_command(program: configparser.SectionProxy) -> None:
    argv = program["command"].split()
    assert argv[:3] == ["/usr/local/bin/task-runner", "-redis-host", "127.0.0.1:6379"]
    assert program.getboolean("autostart") and program.getboolean("autorestart")
    assert int(program["startsecs"]) == 3
    for stream in ("stdout", "stderr"):
        assert program[f"{stream}_logfile"].startswith("/var/log/task-runner/")
