"""Security hardening: command allowlists (runner-wide and per channel, at ingress and at run
time), size limits under hostile input, and secrets kept out of logs, pages and --help.

The allowlist rule tested here is the one docs/SECURITY.md states; `PurePosixPath.match` serves
as an independent implementation of it for generated programs and patterns.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path, PurePosixPath
from typing import Any

import hypothesis
import pytest
import redis.asyncio as aioredis
import requests
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from taskrunner.allow import MAX_PATTERN_CHARS, MAX_PATTERNS, admits, check_program
from taskrunner.cli.run import _settings as cli_settings
from taskrunner.cli.run import run as cli_run
from taskrunner.errors import ConfigError, InvalidChannel, InvalidJob, NotAllowed
from taskrunner.parsing import parse_message
from taskrunner.runner import Runner
from taskrunner.validation import (
    MAX_ARGS,
    MAX_CHANNEL_NAME_BYTES,
    MAX_DEDUP_KEY_CHARS,
    MAX_INTERVALS,
    Limits,
)
from tests.support.http import http
from tests.support.net import HOST, free_port
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until, wait_until_sync

LIMITS = Limits()
BIN_DIR = Path(sys.executable).parent

# -- the matching rule ----------------------------------------------------------------------------

COMPONENT = st.text(alphabet="abx.-_", min_size=1, max_size=4).filter(
    lambda c: c not in (".", "..")
)
GLOB_COMPONENT = st.text(alphabet="abx.-_*?[]!", min_size=1, max_size=5).filter(
    lambda c: c not in (".", "..")
)


@st.composite
def programs(draw: st.DrawFn) -> str:
    parts = draw(st.lists(COMPONENT, min_size=1, max_size=4))
    return ("/" if draw(st.booleans()) else "") + "/".join(parts)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(GLOB_COMPONENT, min_size=1, max_size=4))
    return ("/" if len(parts) > 1 and draw(st.booleans()) else "") + "/".join(parts)


def documented_rule(pattern: str, program: str) -> bool:
    """docs/SECURITY.md: without '/', the file name is matched; with '/', the whole program,
    component by component (pathlib's match does both; a relative pattern must also span the
    whole program, not only its end, and a program's leading '/' is no component to match)."""
    path = PurePosixPath(program)
    if "/" not in pattern:
        return path.match(pattern)
    if pattern.startswith("/") != program.startswith("/"):
        return False  # an absolute pattern admits absolute paths only, a relative one relative
    return path.match(pattern) and len(path.parts) == len(PurePosixPath(pattern).parts)


@given(program=programs(), pattern_list=st.lists(patterns(), max_size=4))
def test_a_program_is_allowed_iff_the_documented_rule_says_so(
    program: str, pattern_list: list[str]
) -> None:
    expected = not pattern_list or any(documented_rule(p, program) for p in pattern_list)
    assert admits(pattern_list, program) == expected


@given(
    program=programs(),
    runner=st.lists(patterns(), max_size=3),
    channel=st.lists(patterns(), max_size=3),
)
def test_both_allowlists_must_admit_a_program(
    program: str, runner: list[str], channel: list[str]
) -> None:
    allowed = admits(runner, program) and admits(channel, program)
    try:
        check_program(program, runner=runner, channel=channel, channel_name="c")
    except NotAllowed as exc:
        assert not allowed
        assert repr(program) in str(exc)
        assert ("runner's --allow" in str(exc)) == (not admits(runner, program))
    else:
        assert allowed


@given(
    parts=st.lists(COMPONENT, min_size=1, max_size=3), pattern_list=st.lists(patterns(), min_size=1)
)
def test_a_path_with_dot_dot_is_never_allowed(parts: list[str], pattern_list: list[str]) -> None:
    program = "/usr/local/bin/../" + "/".join(parts)
    assert not admits([*pattern_list, "*", "/usr/local/bin/*"], program)


def test_examples_of_the_rule() -> None:
    assert admits([], "anything at all")
    assert admits(["php"], "php") and admits(["php"], "/usr/bin/php")
    assert admits(["php*"], "/usr/bin/php8.2") and not admits(["php"], "/usr/bin/php8.2")
    assert admits(["/usr/local/bin/*"], "/usr/local/bin/report")
    assert not admits(["/usr/local/bin/*"], "/usr/local/bin/sub/report")  # * stops at '/'
    assert not admits(["/usr/local/bin/*"], "report")  # no PATH lookup
    assert not admits(["/usr/local/bin/*"], "/usr/local/bin/../../../tmp/evil")
    assert not admits(["PHP"], "php")  # case-sensitive
    assert admits(["sh"], "/bin/sh")  # --shell: the program is /bin/sh


# -- allowlists end to end ---------------------------------------------------------------------


async def dead_letter_reasons(runner: Runner, count: int) -> list[str]:
    async def arrived() -> bool:
        return await runner.store.dead_letter_count() >= count

    await wait_until(arrived, message=f"{count} dead letters")
    return [str(entry["reason"]) for entry in await runner.store.dead_letters()]


async def test_runner_allowlist_dead_letters_refused_messages(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(allow=("true", "/bin/echo"))
    messages = [
        {"task": "ls -l /", "chan": "biz", "id": "ls"},
        {"task": "echo bare", "id": "bare-echo"},  # '/bin/echo' is a path pattern: no PATH lookup
        {"task": "/bin/echo hello", "id": "full-echo"},
        {"task": "true", "id": "true"},
    ]
    await redis.lpush("task:prepare:queue", *[json.dumps(m) for m in messages])
    for job_id in ("full-echo", "true"):
        await wait_state(runner.store, job_id, "succeeded")
    reasons = await dead_letter_reasons(runner, 2)
    assert len(reasons) == 2
    assert any("program 'ls' is not allowed by this runner's --allow" in r for r in reasons)
    assert any("program 'echo' is not allowed" in r for r in reasons)
    assert all("add a pattern to --allow" in r for r in reasons)
    for job_id in ("ls", "bare-echo"):
        assert await runner.store.get_job(job_id) is None


async def test_http_refuses_a_program_the_allowlists_do_not_admit(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    bin_path = tmp_path / "bin"
    bin_path.mkdir()
    for name in ("hello.sh", "other.sh"):
        (bin_path / name).write_text("#!/bin/sh\necho hi\n")
        (bin_path / name).chmod(0o755)
    runner = await runners.start(allow=("true", "echo", "hello.sh"), bin_path=bin_path)

    status, body = await http(runner, "POST", "/push", data={"task": "ls /", "channel": "biz"})
    assert (status, body["status_code"]) == (403, 403)
    assert "program 'ls' is not allowed by this runner's --allow" in body["message"]
    status, body = await http(runner, "POST", "/api/jobs", json={"task": "rm -rf /tmp/x"})
    assert status == 403 and body["error"]["status"] == 403
    assert "program 'rm'" in body["error"]["message"]
    status, body = await http(runner, "POST", "/api/v1/task/script", json={"bin_name": "other.sh"})
    assert status == 403 and f"program '{bin_path / 'other.sh'}' is not allowed" in body
    status, body = await http(runner, "POST", "/api/v1/task/script", json={"bin_name": "hello.sh"})
    assert status == 200, body

    status, body = await http(
        runner, "POST", "/api/channels", json={"name": "only-true", "allow": ["true"]}
    )
    assert status == 201 and body["allow"] == ["true"]
    status, body = await http(
        runner, "POST", "/push", data={"task": "echo x", "channel": "only-true"}
    )
    assert status == 403
    assert "not allowed in channel 'only-true' (allow: 'true')" in body["message"]
    status, body = await http(
        runner, "POST", "/push", data={"task": "true", "channel": "only-true"}
    )
    assert status == 200 and body["data"]["result"] is True
    await wait_state(runner.store, body["data"]["id"], "succeeded")

    status, body = await http(runner, "PATCH", "/api/channels/only-true", json={"allow": []})
    assert status == 200 and "allow" not in body
    status, body = await http(
        runner, "POST", "/push", data={"task": "echo x", "channel": "only-true"}
    )
    assert status == 200


async def test_a_channel_change_applies_to_the_next_request_on_the_same_runner(
    runners: RunnerHarness,
) -> None:
    """The runner that takes a PATCH applies it at once, not when its own pub/sub echo
    arrives: here the echo never does."""
    runner = await runners.start()
    status, _ = await http(runner, "POST", "/api/channels", json={"name": "c", "allow": ["true"]})
    assert status == 201
    await wait_until(lambda: "c" in runner.workers)
    runner.workers.refresh.set = lambda: None  # type: ignore[method-assign]  # no reload from pub/sub

    status, body = await http(runner, "PATCH", "/api/channels/c", json={"allow": ["echo"]})
    assert status == 200 and body["allow"] == ["echo"]
    status, body = await http(runner, "POST", "/push", data={"task": "echo x", "channel": "c"})
    assert status == 200, body
    status, body = await http(runner, "POST", "/push", data={"task": "true", "channel": "c"})
    assert status == 403, body
    assert runner.workers["c"].config.allow == ("echo",)


@pytest.mark.parametrize(
    "allow",
    [
        "true",
        [""],
        [1],
        ["a\tb"],
        ["x" * (MAX_PATTERN_CHARS + 1)],
        ["p"] * (MAX_PATTERNS + 1),
        {"php": True},
    ],
)
async def test_a_bad_channel_allowlist_is_a_400(runners: RunnerHarness, allow: Any) -> None:
    runner = await runners.start(task_mode=False)
    status, body = await http(runner, "PATCH", "/api/channels/biz", json={"allow": allow})
    assert status == 400, body
    assert '"allow"' in body["error"]["message"]
    status, body = await http(runner, "POST", "/api/channels", json={"name": "n", "allow": allow})
    assert status == 400, body


async def test_a_job_refused_at_run_time_fails_without_retry(runners: RunnerHarness) -> None:
    """The channel's list tightened after the job was queued: the attempt fails, for good."""
    runner = await runners.start()
    service = runner.service
    await service.create_channel(service.new_channel("tight", {"allow": ["echo"], "paused": True}))
    admission = await service.submit(
        {"task": "echo hi", "channel": "tight", "retries": 3}, source="test"
    )
    await service.update_channel("tight", {"allow": ["true"], "paused": False})
    record = await wait_state(runner.store, admission.job_id, "failed", "dead", "retrying")
    assert record.state == "failed" and record.attempt == 1
    assert record.error.startswith("refused at run time: program 'echo' is not allowed")
    assert "channel 'tight'" in record.error and "queue update tight --allow" in record.error


async def test_with_shell_the_program_is_the_shell(runners: RunnerHarness) -> None:
    strict = await runners.start(shell=True, allow=("echo",))
    status, body = await http(strict, "POST", "/push", data={"task": "echo hi"})
    assert status == 403 and "program '/bin/sh' is not allowed" in body["message"]
    await runners.stop(strict)
    shell = await runners.start(shell=True, allow=("sh",))
    admission = await shell.service.submit({"task": "echo hi | tr h j"}, source="test")
    record = await wait_state(shell.store, admission.job_id, "succeeded")
    assert record.stdout == "ji\n"


def console_script() -> str:
    found = shutil.which("taskrunner", path=str(BIN_DIR))
    if found is None:
        pytest.fail("console script 'taskrunner' not found next to python: pip install -e .")
    return found


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    return {**env, **extra}


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        console_script(), *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env or child_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.mark.slow
async def test_queue_update_sets_and_clears_a_channel_allowlist(redis_url: str) -> None:
    url = ["--redis-url", redis_url]
    assert (await run_cli("queue", "create", "tools", *url)).returncode == 0
    ran = await run_cli(
        "queue", "update", "tools", "--allow", "php", "--allow", "/usr/local/bin/*", "--json", *url
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["allow"] == ["php", "/usr/local/bin/*"]
    ran = await run_cli("queue", "update", "tools", "--allow-any", "--json", *url)
    assert ran.returncode == 0 and "allow" not in json.loads(ran.stdout)
    ran = await run_cli("queue", "update", "tools", "--allow", "x", "--allow-any", *url)
    assert ran.returncode == 2 and "not both" in ran.stderr
    ran = await run_cli("queue", "update", "tools", "--allow", "bad\tpattern", *url)
    assert ran.returncode == 2 and "control characters" in ran.stderr


def test_runner_allowlist_from_flags_environment_and_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("TASKRUNNER_")]:
        monkeypatch.delenv(name)

    def allow(*args: str) -> tuple[str, ...]:
        with cli_run.make_context("run", list(args)) as ctx:
            return cli_settings(ctx.params).allow

    assert allow() == ()
    config = tmp_path / "taskrunner.toml"
    config.write_text('allow = ["php", "/usr/local/bin/*"]\n')
    assert allow("--config", str(config)) == ("php", "/usr/local/bin/*")
    assert allow("--config", str(config), "--allow", "true") == ("true",)  # flags win
    config.write_text('allow = "php sh"\n')
    assert allow("--config", str(config)) == ("php", "sh")
    monkeypatch.setenv("TASKRUNNER_ALLOW", "backup-*  /opt/jobs/*")
    assert allow() == ("backup-*", "/opt/jobs/*")
    with pytest.raises(ConfigError, match="--allow entries must be non-empty strings"):
        allow("--allow", "")


# -- hostile input ----------------------------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\x00b", "sleep 1", "  ", "'unbalanced", "60 600 x", "1e999"]),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    ["task", "chan", "channel", "id", "args", "ts", "run_at", "delay", "retries",
     "retry_intervals", "timeout", "dedup_key", "bin_name", "method", "url", "start_time",
     "time_interval", "max_run_time", "name", "worker", "distinct", "worker_count", "allow",
     "paused", "log_output"]
)  # fmt: skip
FIELDS = st.dictionaries(st.one_of(FIELD_NAMES, st.text(max_size=10)), JSON_VALUE, max_size=6)


def hostile_messages() -> list[bytes]:
    return [
        b"[" * 200_000,  # nesting past the recursion limit
        b'{"task": "x", "timeout": ' + b"9" * 4000 + b"}",  # an int too large for a float
        b'{"task": "\\ud800"}',  # a lone surrogate: not UTF-8
        b'{"task": "a\\u0000b"}',
        b'{"task": "true", "args": ["\\udfff"]}',
        b'{"task": "true", "args": ' + json.dumps(["x" * 1000] * 70).encode() + b"}",
        b'{"task": "true", "dedup_key": "' + b"k" * (MAX_DEDUP_KEY_CHARS + 1) + b'"}',
        b'{"task": "true", "retry_intervals": "' + b"1 " * 3000 + b'"}',
        b'{"task": "x' + b"y" * LIMITS.max_message_bytes + b'"}',
        b"\xff\xfe not utf-8",
    ]


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=st.one_of(st.binary(max_size=200), FIELDS.map(lambda f: json.dumps(f).encode())))
def test_parse_message_refuses_hostile_input_with_a_reason(message: bytes) -> None:
    try:
        job = parse_message(message, default_channel="default", now=time.time())
    except (InvalidJob, InvalidChannel) as exc:
        assert str(exc)
    else:  # whatever is accepted can be stored in Redis and passed to exec
        for value in job.to_record().values():
            value.encode("utf-8")
        assert "\x00" not in job.task and all("\x00" not in a for a in job.args or ())


def test_parse_message_survives_the_hostile_list() -> None:
    for message in hostile_messages():
        with pytest.raises(InvalidJob):
            parse_message(message, default_channel="default", now=time.time())


async def test_hostile_messages_are_dead_lettered_and_the_runner_goes_on(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    hostile = hostile_messages()
    await redis.lpush("task:prepare:queue", *hostile, json.dumps({"task": "true", "id": "after"}))
    await wait_state(runner.store, "after", "succeeded")
    await dead_letter_reasons(runner, len(hostile))
    assert not runner.failed


def exercise(base: str, method: str, path: str, fields: dict[str, Any], form: bool) -> int:
    """One request with generated fields (JSON, or a form of their text, lone surrogates sent
    as the invalid UTF-8 they encode to); its status."""
    if form:
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        body = urllib.parse.urlencode(text, errors="surrogatepass").encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body, content_type = json.dumps(fields).encode(), "application/json"
    resp = requests.request(
        method, base + path, data=body, headers={"Content-Type": content_type}, timeout=10
    )
    return resp.status_code


def fuzz(base: str, method: str, path: str) -> None:
    @hypothesis.settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(fields=FIELDS, form=st.booleans())
    def run(fields: dict[str, Any], form: bool) -> None:
        status = exercise(base, method, path, fields, form and method == "POST")
        assert status < 500, (method, path, fields)

    run()


@pytest.mark.timeout(180)
@pytest.mark.slow
async def test_generated_requests_never_get_a_server_error(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start(task_mode=False, bin_path=tmp_path)  # nothing generated runs
    base = f"http://{runner.settings.http_addr}"
    for method, path in [
        ("POST", "/push"),
        ("POST", "/queue"),
        ("POST", "/api/jobs"),
        ("POST", "/api/channels"),
        ("PATCH", "/api/channels/biz"),
        ("POST", "/api/v1/task/script"),
        ("POST", "/api/v1/task/rpc"),
    ]:
        await asyncio.to_thread(fuzz, base, method, path)


def raw_request(runner: Runner, request: bytes) -> bytes:
    host, port = runner.settings.http_host_port()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


BIG = "x" * (1024 * 1024 + 1)
TOO_MANY_ARGS = ["a"] * (MAX_ARGS + 1)
LONG_ARGS = ["a" * 1000] * 66


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/push", {"task": BIG}, 413),
        ("POST", "/api/jobs", {"task": BIG}, 413),
        ("POST", "/api/v1/task/script", {"bin_name": BIG}, 403),  # kingtask: every error is 403
        ("POST", "/push", {"task": "x" * (LIMITS.max_task_chars + 1)}, 400),
        ("POST", "/api/jobs", {"task": "x" * (LIMITS.max_task_chars + 1)}, 400),
        ("POST", "/api/jobs", {"task": "true", "args": TOO_MANY_ARGS}, 400),
        ("POST", "/api/jobs", {"task": "true", "args": LONG_ARGS}, 400),
        ("POST", "/push", {"task": "true", "args": json.dumps(LONG_ARGS)}, 400),
        ("POST", "/api/jobs", {"task": "true", "dedup_key": "k" * (MAX_DEDUP_KEY_CHARS + 1)}, 400),
        ("POST", "/api/jobs", {"task": "true", "retry_intervals": [1] * (MAX_INTERVALS + 1)}, 400),
        ("POST", "/api/jobs", {"task": "true", "retry_intervals": "1 " * 2049}, 400),
        ("POST", "/api/jobs", {"task": "true", "id": "i" * 129}, 400),
        ("POST", "/push", {"task": "true", "channel": "c" * (MAX_CHANNEL_NAME_BYTES + 1)}, 400),
        ("POST", "/push", {"task": "true", "timeout": 10**400}, 400),
        ("POST", "/push", {"task": "\ud800"}, 400),
        ("POST", "/queue", {"name": "q", "worker": "9" * 5000}, 400),
        ("POST", "/queue", {"name": "q", "worker": "\u00b2"}, 400),
        ("POST", "/queue", {"name": "q", "worker": "1001"}, 400),
        ("PATCH", "/api/channels/biz", {"worker_count": "\u00b2"}, 400),
        ("PATCH", "/api/channels/biz", {"allow": ["p"] * 65}, 400),
    ],
)
async def test_oversized_and_malformed_fields_get_clear_4xx(
    runners: RunnerHarness, tmp_path: Path, method: str, path: str, body: Any, status: int
) -> None:
    runner = await runners.start(task_mode=False, bin_path=tmp_path)
    got, reply = await http(
        runner,
        method,
        path,
        data=io.BytesIO(json.dumps(body).encode()),  # a stream: aiohttp warns on large bytes
        headers={"Content-Type": "application/json"},
    )
    assert got == status, reply
    message = json.dumps(reply)
    assert len(message) < 4000  # the error names the problem without echoing the input


async def test_deep_json_and_oversized_request_lines_get_4xx(runners: RunnerHarness) -> None:
    runner = await runners.start(task_mode=False, auth_token="t0ken")
    auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
    deep = "[" * 100_000
    for path in ("/push", "/api/jobs", "/api/v1/task/rpc", "/queue"):
        status, body = await http(runner, "POST", path, data=deep, headers=auth)
        assert status in (400, 403), (path, status, body)
        assert "JSON" in json.dumps(body), body
    long_query = b"GET /status?channel=" + b"c" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 9000 + b"\r\n\r\n"
    not_utf8_token = b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
    for request, expected in ((long_query, 400), (long_header, 400), (not_utf8_token, 401)):
        reply = await asyncio.to_thread(
            raw_request, runner, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        assert status_of(reply) == expected, reply[:300]


# -- secrets ----------------------------------------------------------------------------------

TOKEN = "tok-SECRET-5be1"
PASSWORD = "pw-SECRET-93aa"
SENTINEL_PASSWORD = "sentinel-SECRET-77"


@pytest.mark.slow
def test_help_shows_no_secret(tmp_path: Path) -> None:
    config = tmp_path / "taskrunner.toml"
    config.write_text(f'auth_token = "{TOKEN}"\nredis_password = "{PASSWORD}"\n')
    env = child_env(
        TASKRUNNER_AUTH_TOKEN=TOKEN,
        TASKRUNNER_REDIS_PASSWORD=PASSWORD,
        TASKRUNNER_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:1/0",
    )
    for args in (["run", "--config", str(config), "--help"], ["run", "--help"], ["push", "--help"],
                 ["queue", "update", "--help"], ["--help"]):  # fmt: skip
        ran = subprocess.run(
            [console_script(), *args], capture_output=True, text=True, env=env, timeout=30
        )
        assert ran.returncode == 0, ran.stderr
        assert "--redis-url" in ran.stdout or "Commands" in ran.stdout
        for secret in (TOKEN, PASSWORD):
            assert secret not in ran.stdout + ran.stderr, args


@pytest.mark.slow
def test_startup_errors_show_no_password(redis_server: RedisServer, tmp_path: Path) -> None:
    server = RedisServer(redis_server.kind, redis_server.binary, tmp_path / "s", password=PASSWORD)
    server.start()
    try:
        cases = [
            (f"redis://:{PASSWORD}-wrong@{HOST}:{server.port}/0", "refused the credentials"),
            (f"redis://:{PASSWORD}@{HOST}:{free_port()}/0", "cannot reach Redis"),
            (
                f"redis+sentinel://:{PASSWORD}@{HOST}:{free_port()},{HOST}:{free_port()}/m"
                f"?sentinel_password={SENTINEL_PASSWORD}",
                "cannot reach Redis",
            ),
            (f"redis://:{PASSWORD}@{HOST}:{server.port}/0?bogus=1", "unknown option 'bogus'"),
        ]
        for url, says in cases:
            ran = subprocess.run(
                [console_script(), "run", "--redis-url", url, "--pidfile", "",
                 "--http-addr", f"{HOST}:{free_port()}"],
                capture_output=True, text=True, env=child_env(), timeout=60,
            )  # fmt: skip
            assert ran.returncode == 2, (url, ran.stderr)
            assert says in ran.stderr, ran.stderr
            assert ":***@" in ran.stderr
            assert PASSWORD not in ran.stderr + ran.stdout
            assert SENTINEL_PASSWORD not in ran.stderr + ran.stdout
    finally:
        server.stop()


@pytest.fixture
def secret_runner(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`taskrunner run` on a password-protected Redis with a token, JSON debug logs in a file."""
    server = RedisServer(redis_server.kind, redis_server.binary, tmp_path / "s", password=PASSWORD)
    server.start()
    port, log_path = free_port(), tmp_path / "runner.log"
    argv = [
        console_script(), "run", "--redis-url", f"redis://:{PASSWORD}@{HOST}:{server.port}/0",
        "--auth-token", TOKEN, "--http-addr", f"{HOST}:{port}", "--pidfile", "",
        "--log-format", "json", "--log-level", "debug",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env()
        )
    try:
        wait_until_sync(lambda: get(port, "/healthz")[0] == 200, timeout_s=15, message="start")
        yield port, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.stop()


def get(port: int, path: str, *, token: str | None = TOKEN, body: Any = None) -> tuple[int, str]:
    """GET `path` (POST with `body` as JSON) with the bearer token; (0, "") if unreachable."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn = HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(
            "GET" if body is None else "POST",
            path,
            body=None if body is None else json.dumps(body),
            headers=headers,
        )
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
    finally:
        conn.close()


@pytest.mark.slow
def test_no_secret_in_logs_pages_or_api(secret_runner: tuple[int, Path]) -> None:
    port, log_path = secret_runner
    status, body = get(port, "/api/jobs", body={"task": "echo visible-output", "id": "j1"})
    assert status == 201, body
    wait_until_sync(
        lambda: '"state": "succeeded"' in get(port, "/api/jobs/j1")[1], message="job j1 to end"
    )
    pages: dict[str, str] = {}
    for path in ("/", "/status", "/healthz", "/api/stats", "/api/channels", "/api/jobs",
                 "/api/jobs/j1", "/api/dead-letters", "/api/openapi.json", "/metrics", "/ui",
                 "/api/v1/task/count/undo"):  # fmt: skip
        status, text = get(port, path)
        assert status < 500, (path, status, text)
        pages[path] = text
    for token in (None, "wrong", TOKEN[:-1]):
        status, text = get(port, "/status", token=token)
        assert status == 401
        pages[f"401 {token}"] = text
    assert "visible-output" in pages["/api/jobs/j1"]
    log = log_path.read_text()
    assert ":***@" in log  # the start-up line names Redis, redacted
    for where, text in {**pages, "log": log}.items():
        assert TOKEN not in text and PASSWORD not in text, where
