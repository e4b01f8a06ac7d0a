"""kingtask's YAML config files read by `taskrunner run --config` (linlams/kingtask etc/*.yaml,
config/config.go; the-no/kingtask's README), and `-log-level warn` / `log_path`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from taskrunner import logs
from taskrunner.cli.run import CONFIG_NOTES
from taskrunner.cli.run import _settings as cli_settings
from taskrunner.cli.run import run as cli_run
from taskrunner.config import Settings
from taskrunner.errors import ConfigError
from taskrunner.runner import Runner
from taskrunner.store import Store
from tests.support.net import free_port
from tests.test_kingtask import EXAMPLE
from tests.test_kingtask_tcp import OK, BrokerClient, task_request

# linlams/kingtask etc/broker.yaml and etc/worker.yaml, verbatim (comments included; a
# trailing space dropped)
BROKER_YAML = """#broker地址
addr : 0.0.0.0:9595
#redis地址
redis : 127.0.0.1:6379
#log输出到文件，可不配置
#log_path: /Users/flike/src
#日志级别
log_level: debug"""  # noqa: RUF001
WORKER_YAML = """#broker地址
broker : 127.0.0.1:9595
#redis地址
redis : 127.0.0.1:6379
#异步任务可执行文件目录
bin_path : /Users/flike/src
#日志输出目录，可不配置
#log_path : /Users/flike/src
#日志级别
log_level: debug

#每个任务执行时间间隔，单位为秒
period : 1
#结果保存时间，单位为秒
result_keep_time : 1000
#任务执行最长时间，单位秒
task_run_time: 30"""  # noqa: RUF001
# the-no/kingtask's README (seed 002): its broker's `port`, a Redis elsewhere
SEED_002_BROKER_YAML = """#broker端口配置
port : :9595
#redis地址
redis : 192.168.139.139:6699
#日志级别
log_level: debug
"""


@pytest.fixture(autouse=True)
def no_taskrunner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TASKRUNNER_")]:
        monkeypatch.delenv(name)


def parse(*args: str) -> tuple[Settings, list[tuple[int, str]]]:
    """`taskrunner run ARGS` (Go-style flags accepted) as Settings, and the config's notes."""
    with cli_run.make_context("run", list(args)) as ctx:
        return cli_settings(ctx.params), ctx.meta.get(CONFIG_NOTES, [])


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_upstream_broker_yaml(tmp_path: Path) -> None:
    config = write(tmp_path, "broker.yaml", BROKER_YAML)
    settings, notes = parse(f"-config={config}", "--insecure")
    assert (settings.kingtask_addr, settings.redis_url) == ("0.0.0.0:9595", "redis://127.0.0.1:6379/0")  # fmt: skip
    assert (settings.log_level, notes) == ("debug", [])
    settings.check_exposure()
    settings, _ = parse(f"-config={config}")
    with pytest.raises(ConfigError, match=r"--kingtask-addr 0\.0\.0\.0:9595 is reachable"):
        settings.check_exposure()  # addr binds every interface: refused without --insecure


def test_upstream_worker_yaml(tmp_path: Path) -> None:
    config = write(tmp_path, "worker.yaml", WORKER_YAML)
    with pytest.raises(click.BadParameter, match="'/Users/flike/src' does not exist"):
        parse("-config", config)  # its bin_path: a directory on the author's Mac
    settings, notes = parse("-config", config, "-bin-path", str(tmp_path))  # flags win
    assert (settings.bin_path, settings.result_ttl_s, settings.default_timeout_s) == (tmp_path, 1000, 30)  # fmt: skip
    assert settings.kingtask_addr is None  # a worker's file: no TCP listener
    assert [level for level, _ in notes] == [logging.INFO, logging.INFO]
    assert "'broker' ignored" in notes[0][1] and "'period' ignored" in notes[1][1]


def test_seed_002_port_is_the_http_address(tmp_path: Path) -> None:
    config = write(tmp_path, "broker.yaml", SEED_002_BROKER_YAML)
    settings, _ = parse("-config", config, "-auth-token", "t")
    assert (settings.http_addr, settings.http_host_port()) == (":9595", ("0.0.0.0", 9595))
    assert settings.redis_url == "redis://192.168.139.139:6699/0"


@pytest.mark.parametrize(
    ("redis", "url"),
    [("127.0.0.1:6380/3", "redis://127.0.0.1:6380/3"), ("cache:6379", "redis://cache:6379/0")],
)
def test_redis_as_host_port_and_db(tmp_path: Path, redis: str, url: str) -> None:
    config = write(tmp_path, "w.yml", f"redis : {redis}\n")
    assert parse("--config", config)[0].redis_url == url


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("redis : h:1/x\n", "'redis' 'h:1/x' must be HOST:PORT or HOST:PORT/DB"),
        ("redis : [1, 2]\n", "'redis' must be text"),
        ("addr: [oops\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_yaml_names_the_problem(tmp_path: Path, text: str, error: str) -> None:
    config = write(tmp_path, "broker.yaml", text)
    with pytest.raises(click.BadParameter, match=error):
        parse("--config", config)


def test_unknown_keys_give_one_warning_naming_them(tmp_path: Path) -> None:
    config = write(tmp_path, "broker.yaml", "log_level: info\nfoo: 1\nbar: 2\nconcurrent: 3\n")
    settings, notes = parse("--config", config)
    assert settings.concurrent == 3  # our own option names pass through
    assert [(level, "bar, foo" in message) for level, message in notes] == [(logging.WARNING, True)]  # fmt: skip


def test_peroid_as_config_go_spells_it_is_known(tmp_path: Path) -> None:
    config = write(tmp_path, "worker.yaml", "peroid : 2\n")
    (note,) = parse("--config", config)[1]
    assert note[0] == logging.INFO and "'peroid' ignored" in note[1]


def test_a_conf_file_is_read_as_yaml_when_it_is_not_toml(tmp_path: Path) -> None:
    config = write(tmp_path, "broker.conf", BROKER_YAML)  # upstream's default: /etc/broker.conf
    assert parse("-config", config, "-insecure")[0].kingtask_addr == "0.0.0.0:9595"
    config = write(tmp_path, "broken.conf", "concurrent = = 3\n")
    with pytest.raises(click.BadParameter, match="not valid TOML"):
        parse("--config", config)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers and isinstance(handler, logging.StreamHandler):
            handler.close()
            handler.stream.close()  # a --log-path file
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_log_level_warn_everywhere_and_log_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert parse("-log-level", "warn")[0].log_level == "warn"
    assert parse("-log-level=WARN")[0].log_level == "warn"
    config = write(tmp_path, "w.yaml", f"log_level: warn\nlog_path: {tmp_path / 'logs'}\n")
    settings, _ = parse("--config", config)
    assert (settings.log_level, settings.log_path) == ("warn", tmp_path / "logs")
    monkeypatch.setenv("TASKRUNNER_LOG_LEVEL", "warn")
    assert parse()[0].log_level == "warn"
    logs.configure(level="warn", log_dir=tmp_path / "logs")
    logging.getLogger("taskrunner.test").info("not this one")
    logging.getLogger("taskrunner.test").warning("this one")
    logging.getLogger().handlers[0].flush()
    assert (tmp_path / "logs" / "sys.log").read_text().count("this one") == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--log-path .*: choose a writable directory"):
        logs.configure(log_dir=tmp_path / "file")


async def test_a_runner_from_upstream_yaml_answers_seed_001(tmp_path: Path, redis_url: str) -> None:
    """broker.yaml's and worker.yaml's keys in one file, pointed at the test's Redis and a bin_path with
    `example`: the TCP broker protocol answers seed 001's example."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "example").write_text(EXAMPLE)
    (bin_dir / "example").chmod(0o755)
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    port = free_port()
    config = write(
        tmp_path,
        "kingtask.yaml",
        f"addr : 127.0.0.1:{port}\nredis : {host_port}\nbin_path : {bin_dir}\n"
        "log_level: debug\nperiod : 1\nresult_keep_time : 1000\ntask_run_time: 30\n",
    )
    settings, _ = parse("-config", config, "-pidfile", "", "-http-addr", f"127.0.0.1:{free_port()}")
    runner = Runner(settings, Store.from_url(settings.redis_url))
    try:
        await runner.start()
        client = await BrokerClient.connect(port)
        request = task_request("example", ["12", "45"])
        assert await client.delay(request) == OK
        assert json.loads(await client.final_result(request)) == {
            "is_result_exist": 1, "is_success": 1, "message": "57",
        }  # fmt: skip
        client.close()
    finally:
        await runner.close()
        await runner.store.close()
