"""kingtask's YAML config files as `taskrunner run` options: linlams/kingtask's
`etc/broker.yaml` and `etc/worker.yaml` (read by `config/config.go`) and the keys of
the-no/kingtask's README. One file may hold the broker's and the worker's keys: a runner is
both. Keys that are `taskrunner run` options pass through; the caller warns about the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from taskrunner.errors import ConfigError

YAML_SUFFIXES: Final = (".yaml", ".yml")
# worker.yaml's names of our options (config file keys only: the flags keep our names)
KINGTASK_ALIASES: Final = {"result_keep_time": "result_ttl", "task_run_time": "default_timeout"}
# Keys a kingtask file may hold that mean nothing to a runner: why each is ignored.
IGNORED: Final = {
    "broker": "the worker's broker address: a runner is its own broker, it needs none",
    "period": (
        "the worker's pause after each task: a runner starts a job as soon as one of its"
        " channel's workers is free (--concurrent sets how many)"
    ),
}
IGNORED["peroid"] = IGNORED["period"]  # config/config.go's yaml tag: the key upstream read


def read_yaml(path: Path, text: str) -> dict[str, Any]:
    """The mapping a YAML file holds; ConfigError naming the file and the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--config {path}: must be a mapping of keys to values, as kingtask's")
    return data


def kingtask_options(data: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """`run` options for a kingtask file's keys, and a note for each key that is ignored."""
    options: dict[str, Any] = {}
    notes = []
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in IGNORED:
            notes.append(f"--config {path}: {key!r} ignored: {IGNORED[name]}")
        elif name in KEYS:
            options.update(KEYS[name](_text(key, value, path), path))
        else:
            options[KINGTASK_ALIASES.get(name, name)] = value
    return options, notes


def _text(key: str, value: Any, path: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"--config {path}: {key!r} must be text, got {value!r}")
    return str(value)


def _port(value: str, _path: Path) -> dict[str, Any]:
    """the-no/kingtask's `port : :9595`: where its HTTP API listens."""
    return {"http_addr": value if ":" in value else f":{value}"}


def _redis(value: str, path: Path) -> dict[str, Any]:
    """`HOST:PORT` or `HOST:PORT/DB`, split as broker.go and worker.go split it."""
    host, sep, db = value.partition("/")
    if sep and not db.isdigit():
        raise ConfigError(
            f"--config {path}: 'redis' {value!r} must be HOST:PORT or HOST:PORT/DB,"
            " e.g. 127.0.0.1:6379/0"
        )
    return {"redis_host": host, "redis_db": int(db) if sep else 0}


def _log_level(value: str, _path: Path) -> dict[str, Any]:
    return {"log_level": value.lower()}


def _option(name: str) -> Callable[[str, Path], dict[str, Any]]:
    return lambda value, _path: {name: value}


KEYS: Final[dict[str, Callable[[str, Path], dict[str, Any]]]] = {
    "addr": _option("kingtask_addr"),  # broker.yaml: where the TCP broker protocol listens
    "port": _port,
    "redis": _redis,
    "log_level": _log_level,
    "bin_path": _option("bin_path"),
    "log_path": _option("log_path"),
}
