"""The embedded Valkey server (AOF kept across restarts, clear start errors); the test servers."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from taskrunner.embedded import EmbeddedRedis, valkey_binary
from taskrunner.errors import ConfigError
from tests.support.net import free_port
from tests.support.redis_servers import RedisServer, server_binary
from tests.support.waiting import wait_until, wait_until_sync


def test_aof_survives_a_graceful_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "var"
    caplog.set_level(logging.INFO, logger="taskrunner.embedded")
    with EmbeddedRedis(data_dir) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with SyncRedis.from_url(server.url) as client:
            assert client.info("persistence")["aof_enabled"] == 1
            client.set("greeting", "hello")
        first_pid = server.pid
    assert f"dir={data_dir} port=" in caplog.text
    assert f"pid={first_pid}" in caplog.text
    assert (data_dir / "appendonlydir").is_dir()
    assert not (data_dir / "dump.rdb").exists()  # the data can only come back from the AOF

    with EmbeddedRedis(data_dir) as server, SyncRedis.from_url(server.url) as client:
        assert client.get("greeting") == b"hello"
    assert "DB loaded from append only file" in (data_dir / "valkey.log").read_text()


def test_aof_survives_a_server_crash(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        with SyncRedis.from_url(server.url) as client:
            client.set("k", "v")
            wait_until_sync(
                lambda: client.info("persistence")["aof_buffer_length"] == 0,
                message="the AOF buffer to be written",
            )
        os.kill(server.pid, signal.SIGKILL)
    finally:
        server.stop()  # reaps the dead server without complaint

    with EmbeddedRedis(tmp_path) as server, SyncRedis.from_url(server.url) as client:
        assert client.get("k") == b"v"


def test_stop_is_idempotent_and_url_needs_a_started_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    finally:
        server.stop()
        server.stop()
    assert not server.running


def test_a_file_as_data_dir_is_a_config_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "var"
    not_a_dir.write_text("")
    with pytest.raises(ConfigError, match="not a directory") as info:
        EmbeddedRedis(not_a_dir).start()
    assert str(not_a_dir) in str(info.value)
    assert str(not_a_dir / "valkey.log") in str(info.value)


def test_a_data_dir_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create data dir") as info:
        EmbeddedRedis(tmp_path / "file" / "var").start()
    assert str(tmp_path / "file" / "var") in str(info.value)


def test_a_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError, match=re.escape(f"127.0.0.1:{port}")) as info:
            EmbeddedRedis(tmp_path, port=port).start()
    assert "already in use" in str(info.value)
    assert str(tmp_path / "valkey.log") in str(info.value)


def test_a_corrupt_aof_is_a_config_error_quoting_the_log(tmp_path: Path) -> None:
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.manifest").write_text("garbage\n")
    with pytest.raises(ConfigError, match="log file: ") as info:
        EmbeddedRedis(tmp_path).start()
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "last line:" in message


def test_valkey_binary_is_executable() -> None:
    binary = valkey_binary()
    assert binary.name == "valkey-server"
    assert os.access(binary, os.X_OK)


def test_redis_server_fixture_is_a_real_server(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port != 6379
    assert redis_server.binary == server_binary(redis_server.kind)
    with SyncRedis.from_url(redis_url) as client:
        assert client.ping() is True
        info = client.info("server")
    if redis_server.kind == "valkey":
        assert info.get("server_name") == "valkey" or "valkey_version" in info
    else:
        assert "redis_version" in info
        assert "valkey_version" not in info


def test_redis_server_restart_keeps_port_and_comes_back(
    redis_server: RedisServer, redis_url: str
) -> None:
    port, old_pid = redis_server.port, redis_server.pid
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.pid != old_pid
    with SyncRedis.from_url(redis_url) as client:
        assert client.ping() is True


def test_ensure_running_brings_back_a_crashed_server(redis_server: RedisServer) -> None:
    os.kill(redis_server.pid, signal.SIGKILL)
    wait_until_sync(lambda: not redis_server.is_running(), message="the server to die")
    redis_server.ensure_running()
    with SyncRedis.from_url(redis_server.url) as client:
        assert client.ping() is True


async def test_async_client_fixture_starts_each_test_empty(redis: aioredis.Redis) -> None:
    assert await redis.dbsize() == 0
    await redis.set("seen", "1")
    await wait_until(lambda: redis.exists("seen"), message="the key to exist")


async def test_wait_until_times_out_with_the_message() -> None:
    calls: list[int] = []

    async def never() -> bool:
        calls.append(1)
        return False

    with pytest.raises(AssertionError, match="the moon to turn blue"):
        await wait_until(never, timeout_s=0.1, message="the moon to turn blue")
    assert len(calls) >= 2


def test_wait_until_sync_returns_once_true_and_times_out() -> None:
    values = iter([False, False, True])
    wait_until_sync(lambda: next(values), timeout_s=5.0, interval_s=0.001)
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for nothing"):
        wait_until_sync(lambda: False, timeout_s=0.05, message="nothing")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- apart from the runner: its own session, attached to by the next start (issue 11) ------------


def test_the_server_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the runner's foreground group; none of it reaches Valkey."""
    with EmbeddedRedis(tmp_path) as server:
        assert os.getsid(server.pid) == server.pid
        assert os.getpgid(server.pid) != os.getpgid(0)


def test_a_second_start_on_the_same_dir_attaches_to_the_running_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskrunner.embedded")
    first = EmbeddedRedis(tmp_path)
    first.start()
    try:
        with SyncRedis.from_url(first.url) as client:
            client.set("k", "v")
        second = EmbeddedRedis(tmp_path, port=free_port())  # another port asked: still attaches
        second.start()
        assert second.attached and not first.attached
        assert (second.pid, second.port) == (first.pid, first.port)
        with SyncRedis.from_url(second.url) as client:
            assert client.get("k") == b"v"
        assert "already running: attached" in caplog.text
        assert "not the" in caplog.text  # says which port it uses instead of the one asked
    finally:
        first.stop()
    assert not (tmp_path / "embedded.json").exists()


def test_a_stale_state_file_is_explained_and_a_new_server_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    (tmp_path / "embedded.json").write_text(
        json.dumps({"pid": gone.pid, "port": free_port(), "started": 1})
    )
    caplog.set_level(logging.INFO, logger="taskrunner.embedded")
    assert EmbeddedRedis(tmp_path).status().state == "stale"
    with EmbeddedRedis(tmp_path) as server:
        assert not server.attached
        assert server.pid != gone.pid
    assert f"names pid {gone.pid}, which no longer runs" in caplog.text


@pytest.mark.slow
def test_a_server_that_runs_but_does_not_answer_is_explained_not_waited_for(
    tmp_path: Path,
) -> None:
    """The state file names a live process (here a sleep) that answers nothing on its port."""
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        with open(f"/proc/{impostor.pid}/stat") as fh:
            started = int(fh.read().rpartition(")")[2].split()[19])
        port = free_port()
        (tmp_path / "embedded.json").write_text(
            json.dumps({"pid": impostor.pid, "port": port, "started": started})
        )
        assert EmbeddedRedis(tmp_path).status().state == "silent"
        began = time.monotonic()
        with pytest.raises(
            ConfigError, match=rf"pid {impostor.pid}, port {port}\) runs but does not answer"
        ):
            EmbeddedRedis(tmp_path).start()
        assert time.monotonic() - began < 15
    finally:
        impostor.kill()
        impostor.wait()


@pytest.mark.slow
def test_embedded_status_and_stop_commands(tmp_path: Path) -> None:
    def taskrunner(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "taskrunner"), "embedded", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    stopped = taskrunner("status", str(tmp_path))
    assert stopped.returncode == 1
    assert f"embedded Valkey in {tmp_path}: stopped" in stopped.stdout
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        with SyncRedis.from_url(server.url) as client:
            client.set("k", "v")
        running = taskrunner("status", str(tmp_path))
        assert running.returncode == 0, running.stdout + running.stderr
        assert f"running pid={server.pid} port={server.port}" in running.stdout
        assert f"redis://127.0.0.1:{server.port}/0" in running.stdout
        stop = taskrunner("stop", str(tmp_path))
        assert stop.returncode == 0, stop.stderr
        assert "AOF flushed" in stop.stderr
        wait_until_sync(lambda: _gone(server.pid), message="the server to exit")
    finally:
        server.stop()
    assert "nothing to stop" in taskrunner("stop", str(tmp_path)).stdout
    with EmbeddedRedis(tmp_path) as again, SyncRedis.from_url(again.url) as client:
        assert client.get("k") == b"v"  # the stop flushed the AOF


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True
