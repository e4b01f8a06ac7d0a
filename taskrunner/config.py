"""Settings: one frozen dataclass, built from flags, TASKRUNNER_* variables and a TOML file."""

from __future__ import annotations

import contextlib
import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from taskrunner.allow import parse_patterns
from taskrunner.errors import ConfigError, InvalidChannel, InvalidJob
from taskrunner.kingtask_config import KINGTASK_ALIASES, YAML_SUFFIXES, kingtask_options, read_yaml
from taskrunner.store.urls import parse_redis_url
from taskrunner.validation import Limits, validate_channel_name

# Config-file keys accepted as aliases of our own names (kingtask's worker.yaml names).
CONFIG_ALIASES = KINGTASK_ALIASES
MAX_HTTP_READ_TIMEOUT_S = 3600.0
MAX_HTTP_CONNECTIONS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    embedded_redis_dir: Path | None = None
    embedded_redis_port: int = 6399
    concurrent: int = 5
    channel_default: str = "default"
    default_channels: bool = True  # also ensure biz and cron at start (the default one always)
    http_addr: str = "127.0.0.1:60001"
    http_read_timeout_s: float = 15.0  # headers, then the body, must arrive within this
    http_max_connections: int = 0  # 0: a quarter of `ulimit -n`, 16 to 1024
    pidfile: Path | None = Path("/tmp/task-runner.pid")
    task_mode: bool = True
    colorful_tty: bool = False
    shell: bool = False
    bin_path: Path | None = None
    result_ttl_s: int = 86400
    drain_timeout_s: float = 50.0
    kill_grace_s: float = 5.0
    default_timeout_s: float = 0.0
    lease_s: float = 15.0
    capture_bytes: int = 65536
    dead_letter_cap: int = 10000
    auth_token: str | None = field(default=None, repr=False)
    insecure: bool = False
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    allow: tuple[str, ...] = ()  # --allow: programs this runner runs (taskrunner.allow)
    # TaskRunner's queued commands are adopted at start, then checked for this often (adoption)
    adopt_interval_s: float = 10.0
    # kingtask compatibility: its TCP broker protocol (off: None); its log directory
    kingtask_addr: str | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        try:
            validate_channel_name(self.channel_default)
        except InvalidChannel as exc:
            raise ConfigError(f"--channel-default: {exc}") from exc
        try:
            parse_patterns(self.allow, "--allow")
        except InvalidJob as exc:
            raise ConfigError(str(exc).replace('"--allow"', "--allow")) from exc
        if self.embedded_redis_dir is None:
            parse_redis_url(self.redis_url)  # ConfigError naming the problem, password redacted
        _require(self.concurrent >= 1, f"--concurrent must be at least 1, got {self.concurrent}")
        _require(self.result_ttl_s >= 1, "--result-ttl must be at least 1 second")
        _require(self.drain_timeout_s >= 0, "--drain-timeout must be 0 or more seconds")
        _require(self.kill_grace_s >= 0, "--kill-grace must be 0 or more seconds")
        _require(self.default_timeout_s >= 0, "--default-timeout must be 0 or more seconds")
        _require(self.lease_s >= 0.5, "--lease must be at least 0.5 seconds")
        _require(self.adopt_interval_s > 0, "--adopt-interval must be more than 0 seconds")
        _require(self.capture_bytes >= 2, "--capture-bytes must be at least 2")
        _require(
            0 < self.http_read_timeout_s <= MAX_HTTP_READ_TIMEOUT_S,
            f"--http-read-timeout must be more than 0 and at most {MAX_HTTP_READ_TIMEOUT_S:g}"
            f" seconds, got {self.http_read_timeout_s:g}",
        )
        _require(
            0 <= self.http_max_connections <= MAX_HTTP_CONNECTIONS,
            f"--http-max-connections must be 0 (a quarter of ulimit -n) to"
            f" {MAX_HTTP_CONNECTIONS}, got {self.http_max_connections}",
        )
        _require(
            self.log_format in ("text", "json"),
            f"--log-format must be text or json, got {self.log_format!r}",
        )
        self.http_host_port()  # validates the address
        self.kingtask_host_port()
        if self.bin_path is not None and not self.bin_path.is_dir():
            raise ConfigError(f"--bin-path {self.bin_path} is not a directory: create it first")

    def http_host_port(self) -> tuple[str, int]:
        return host_port(self.http_addr, "--http-addr", "127.0.0.1:60001")

    def kingtask_host_port(self) -> tuple[str, int] | None:
        if not self.kingtask_addr:
            return None
        return host_port(self.kingtask_addr, "--kingtask-addr", "127.0.0.1:9595")

    @property
    def http_is_loopback(self) -> bool:
        return is_loopback(self.http_host_port()[0])

    def check_exposure(self) -> None:
        """Refuse a non-loopback listener without a token, unless --insecure."""
        if not self.http_is_loopback and not self.auth_token and not self.insecure:
            raise ConfigError(
                f"--http-addr {self.http_addr} is reachable from other hosts and anyone who can"
                " push can run commands: set --auth-token (or TASKRUNNER_AUTH_TOKEN), or pass"
                " --insecure to accept the risk"
            )
        kingtask = self.kingtask_host_port()
        if kingtask is not None and not is_loopback(kingtask[0]) and not self.insecure:
            raise ConfigError(
                f"--kingtask-addr {self.kingtask_addr} is reachable from other hosts and"
                " kingtask's TCP protocol carries no token: anyone who can connect can run the"
                f" programs in --bin-path. Listen on 127.0.0.1:{kingtask[1]}, or pass --insecure"
                " to accept the risk"
            )


def host_port(addr: str, option: str, example: str) -> tuple[str, int]:
    """`HOST:PORT` (`:PORT`: every interface; `[::1]:PORT`) as (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option} {addr!r} must be HOST:PORT, e.g. {example}")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def redis_url_from_parts(host: str, password: str | None, db: int) -> str:
    """Upstream's `-redis-host HOST:PORT -redis-password X -redis-db N` as a URL."""
    if ":" not in host:
        raise ConfigError(f"--redis-host {host!r} must include the port, e.g. 127.0.0.1:6379")
    _require(0 <= db <= 10000, f"--redis-db must be a database number, got {db}")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}/{db}"


def load_config_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Read a TOML config file, or kingtask's YAML (a .yaml/.yml name, or a file that is not
    TOML), into option names (dashes or underscores both accepted), and notes to log."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"--config {path}: cannot read it: {why}") from exc
    if path.suffix.lower() in YAML_SUFFIXES:
        return kingtask_options(read_yaml(path, text), path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if path.suffix.lower() != ".toml":
            with contextlib.suppress(ConfigError):  # kingtask's -config=/etc/broker.conf
                return kingtask_options(read_yaml(path, text), path)
        raise ConfigError(f"--config {path}: not valid TOML (nor kingtask's YAML): {exc}") from exc
    section = data.get("taskrunner", data)
    if not isinstance(section, dict):
        raise ConfigError(f"--config {path}: [taskrunner] must be a table")
    options = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        options[CONFIG_ALIASES.get(name, name)] = value
    if isinstance(options.get("allow"), str):  # `allow = "php sh"`: split like TASKRUNNER_ALLOW
        options["allow"] = options["allow"].split()
    return options, []


SETTINGS_FIELDS = frozenset(f.name for f in fields(Settings))
