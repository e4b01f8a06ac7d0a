"""Redis URLs: the forms `--redis-url` accepts, checked before any connection, and their
redaction for logs and errors. Pure: no I/O (store.py builds the clients).

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_cert_reqs=required&ssl_ca_certs=FILE]
    unix://[[USER]:PASSWORD@]/PATH/TO/redis.sock[?db=DB]
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
        [?sentinel_password=SENTINEL_PASSWORD&sentinel_username=SENTINEL_USER]
    rediss+sentinel://...  the same over TLS, to the sentinels and to the data nodes

USER:PASSWORD always authenticate to the data nodes (the primary and its replicas: their
`requirepass` or ACL user); a sentinel's own `requirepass` goes in `sentinel_password`. Ports
default to 6379 (data node) and 26379 (sentinel), DB to 0. Percent-encode `@ : / ? # %` in
user names and passwords.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from taskrunner.errors import ConfigError

DIRECT_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
TLS_SCHEMES: Final = frozenset({"rediss", "rediss+sentinel"})
DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
MAX_DB: Final = 10000
SERVICE_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
HOST_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,253}\Z")
TLS_OPTIONS: Final = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
     "ssl_check_hostname"}
)  # fmt: skip
SENTINEL_OPTIONS: Final = frozenset({"sentinel_password", "sentinel_username"})
CERT_REQS: Final = ("none", "optional", "required")
BOOLEANS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
FORMS: Final = (
    "redis://[:PASSWORD@]HOST:PORT/DB, rediss://..., unix:///PATH/redis.sock?db=N or"
    " redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT]/SERVICE[/DB]"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTarget:
    """Where and how to connect. `hosts` are the data node (redis://, rediss://) or the
    sentinels (redis+sentinel://); `tls` holds redis-py's `ssl*` keyword arguments."""

    scheme: str
    hosts: tuple[tuple[str, int], ...] = ()
    socket_path: str | None = None
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_sentinel(self) -> bool:
        return self.service is not None

    def node_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments of a data-node connection (for `Sentinel.master_for`,
        without host and port: Sentinel tells them)."""
        kwargs: dict[str, Any] = {
            "db": self.db, "username": self.username, "password": self.password, **self.tls,
        }  # fmt: skip
        if self.socket_path is not None:
            kwargs["unix_socket_path"] = self.socket_path
        elif not self.is_sentinel:
            kwargs["host"], kwargs["port"] = self.hosts[0]
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments of a connection to a sentinel."""
        return {"username": self.sentinel_username, "password": self.sentinel_password, **self.tls}


def parse_redis_url(url: str) -> RedisTarget:
    """Check a Redis URL and say what it names; ConfigError (password redacted) if invalid."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*DIRECT_SCHEMES, *SENTINEL_SCHEMES):
        raise _bad(url, f"unknown scheme: use {FORMS}")
    if "#" in rest:
        raise _bad(url, "a '#' must be percent-encoded (%23), also in a password")
    creds, host_part, path, query = _split(scheme, rest)
    options = _options(url, scheme, query)
    username, password = _credentials(creds)
    sentinel = scheme in SENTINEL_SCHEMES
    fields: dict[str, Any] = {
        "scheme": scheme,
        "username": username,
        "password": password,
        "tls": _tls(url, options) if scheme in TLS_SCHEMES else {},
    }
    if scheme == "unix":
        if host_part or not path.startswith("/") or not path.strip("/"):
            raise _bad(url, "give the socket's absolute path: unix:///run/redis/redis.sock")
        fields["socket_path"] = unquote(path)
        path_db = None
    elif sentinel:
        fields["hosts"] = _hosts(url, host_part, default_port=DEFAULT_SENTINEL_PORT)
        fields["service"], path_db = _service(url, path)
        fields["sentinel_username"] = options.get("sentinel_username") or None
        fields["sentinel_password"] = options.get("sentinel_password") or None
    else:
        hosts = _hosts(url, host_part, default_port=DEFAULT_PORT)
        if len(hosts) > 1:
            raise _bad(url, "names several hosts: only redis+sentinel:// takes a list")
        fields["hosts"] = hosts
        path_db = _db(url, path.strip("/")) if path.strip("/") else None
    if path_db is not None and "db" in options:
        raise _bad(url, "gives the database twice (path and ?db=): keep one")
    fields["db"] = path_db if path_db is not None else _db(url, options.get("db", "0"))
    return RedisTarget(**fields)


def redact_url(url: str) -> str:
    """The URL with passwords replaced by `***` (user info and `*password*` query options):
    safe for logs and errors, whatever the form, several sentinel hosts included."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The user info ends at the last '@' of the whole URL, query included: a malformed URL
    # (a '?' in a password) is redacted too; an '@' inside a query value over-redacts.
    creds, at, rest = _split_userinfo(scheme.lower(), rest)
    if at:
        user = creds.partition(":")[0].partition("?")[0]
        creds = f"{user}:***@" if ":" in creds else "***@"
    rest, q, query = rest.partition("?")
    if q:
        query = "&".join(_redact_option(item) for item in query.split("&"))
    return f"{scheme}{sep}{creds if at else ''}{rest}{q}{query}"


def _redact_option(item: str) -> str:
    name, eq, _ = item.partition("=")
    return f"{name}=***" if eq and "password" in unquote(name).lower() else item


def _split_userinfo(scheme: str, rest: str) -> tuple[str, str, str]:
    """(user info, '@' or '', the rest). Host lists and paths of network URLs hold no '@', so
    the user info ends at the last one; a socket path starts after the last '@/'."""
    if scheme == "unix":
        creds, at, path = rest.rpartition("@/")
        return (creds, "@", "/" + path) if at else ("", "", rest)
    creds, at, remainder = rest.rpartition("@")
    return (creds, at, remainder) if at else ("", "", rest)


def _split(scheme: str, rest: str) -> tuple[str, str, str, str]:
    """(user info, host list, path, query), split as `redact_url` splits them."""
    creds, _, remainder = _split_userinfo(scheme, rest)
    remainder, _, query = remainder.partition("?")
    if "?" in creds:
        raise ConfigError(
            f"Redis URL {redact_url(scheme + '://' + rest)!r} has a '?' before its last '@':"
            " percent-encode '?' in a password (%3F) and '@' in an option value (%40)"
        )
    if scheme == "unix":
        return creds, "", remainder, query
    host_part, slash, path = remainder.partition("/")
    return creds, host_part, slash + path, query


def _credentials(creds: str) -> tuple[str | None, str | None]:
    if not creds:
        return None, None
    user, colon, password = creds.partition(":")
    return unquote(user) or None, (unquote(password) or None) if colon else None


def _hosts(url: str, text: str, *, default_port: int) -> tuple[tuple[str, int], ...]:
    if not text:
        raise _bad(url, f"names no host: use {FORMS}")
    return tuple(_host(url, item, default_port) for item in text.split(","))


def _host(url: str, item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise _bad(url, f"host {item!r} is not [IPV6]:PORT")
        port = port[1:]
        valid_host = bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    else:
        host, _, port = item.partition(":")
        valid_host = bool(HOST_RE.match(host))
    if not valid_host:
        raise _bad(
            url, f"host {item!r} is not a host name or address: HOST[:PORT], hosts separated by ','"
        )
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad(url, f"port {port!r} of host {host!r} must be a number from 1 to 65535")
    return host, int(port)


def _service(url: str, path: str) -> tuple[str, int | None]:
    service, _, db = path.strip("/").partition("/")
    service = unquote(service)
    if not SERVICE_RE.match(service):
        raise _bad(
            url,
            "names no valid Sentinel service: redis+sentinel://HOST:PORT/SERVICE[/DB], SERVICE"
            " being the name in the sentinels' `sentinel monitor SERVICE ...` (1-128 of"
            " A-Z a-z 0-9 _ . : -)",
        )
    return service, (_db(url, db) if db else None)


def _db(url: str, text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_DB):
        raise _bad(url, f"database {text[:20]!r} must be a number from 0 to {MAX_DB}")
    return int(text)


def _options(url: str, scheme: str, query: str) -> dict[str, str]:
    allowed = {"db"}
    if scheme in TLS_SCHEMES:
        allowed |= TLS_OPTIONS
    if scheme in SENTINEL_SCHEMES:
        allowed |= SENTINEL_OPTIONS
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad(url, "has a malformed query string: use ?name=value&name=value") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            hint = (
                " (ssl_* options need rediss:// or rediss+sentinel://)"
                if name in TLS_OPTIONS
                else " (sentinel_* options need redis+sentinel://)"
                if name in SENTINEL_OPTIONS
                else ""
            )
            raise _bad(
                url, f"unknown option {name!r}{hint}: this form takes {', '.join(sorted(allowed))}"
            )
        if name in options:
            raise _bad(url, f"gives option {name!r} twice: keep one")
        options[name] = value
    return options


def _tls(url: str, options: Mapping[str, str]) -> dict[str, Any]:
    tls: dict[str, Any] = {"ssl": True}
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None:
        if reqs not in CERT_REQS:
            raise _bad(url, f"ssl_cert_reqs={reqs!r} must be one of {', '.join(CERT_REQS)}")
        tls["ssl_cert_reqs"] = reqs
    check = options.get("ssl_check_hostname")
    if check is not None:
        if check.lower() not in BOOLEANS:
            raise _bad(url, f"ssl_check_hostname={check!r} must be true or false")
        tls["ssl_check_hostname"] = BOOLEANS[check.lower()]
    for name in ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"):
        if options.get(name):
            tls[name] = options[name]
    return tls


def _bad(url: str, problem: str) -> ConfigError:
    return ConfigError(f"Redis URL {redact_url(url)!r} {problem}")
