"""Hostile input for scripts/chaos.py (scenario 4): prepare-queue messages and HTTP requests.

Generated with hypothesis strategies (outside any test: `examples()` drives one `@given`
function and keeps what it draws) plus hand-made raw bytes. Every value that would make a
*valid* job is kept harmless: its command is one of `SAFE_TASKS`, it is due now or within half a
second, retries are few and short, and rpc URLs can never name a reachable host. So valid
hostile jobs end within the run, and nothing hostile can run an arbitrary command.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from taskrunner.errors import InvalidChannel, InvalidJob
from taskrunner.parsing import parse_message
from taskrunner.validation import CHANNEL_NAME_RE, MAX_SECONDS

ID_SLOT = "\x00id-slot\x00"  # replaced by a unique job id when the message is built
SAFE_TASKS = (
    "true", "false", "/bin/true", "echo hostile", "sleep 0.01", "printf %s x", "true --flag",
    "echo 'unbalanced", "", "   ", "\x00", "true\x00x", "héllo wörld", "echo $HOME;rm",
)  # fmt: skip
# Channel names a hostile message may use; unknown-but-valid ones never exist (the HTTP side
# creates channels only as `httpq-*`).
UNKNOWN_CHANNELS = st.from_regex(r"nochan-[a-z0-9]{1,12}", fullmatch=True)
HTTP_CHANNELS = st.from_regex(r"httpq-[a-z0-9]{1,12}", fullmatch=True)
INVALID_NAMES = st.text(max_size=80).filter(lambda s: not CHANNEL_NAME_RE.match(s))

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
NON_STRINGS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.lists(JSON_SCALARS, max_size=3)
)


NUMBER_JUNK = st.sampled_from([math.nan, "abc", "1e", "--1", " ", True, [], {}, "0x10"])


def _numbers(valid: st.SearchStrategy[float]) -> Field:
    """A safe valid number (also as a numeric string), or something no number field accepts."""
    invalid = (
        st.floats(max_value=-0.001)
        | st.floats(min_value=MAX_SECONDS * 2, allow_infinity=True)
        | NUMBER_JUNK
    )
    return Field(valid | valid.map(str), invalid)


def _past_times(now: float) -> Field:
    """Unix times a job may start at without waiting (the past), or invalid ones: never one
    that would keep a job scheduled past the run."""
    past = st.floats(0, now - 86400)
    invalid = st.floats(max_value=-0.001) | st.floats(min_value=now + MAX_SECONDS * 2) | NUMBER_JUNK
    return Field(past | past.map(str), invalid)


@dataclass(frozen=True)
class Field:
    """Values of one message field: `valid` ones are always harmless, `invalid` ones refused."""

    valid: st.SearchStrategy[Any]
    invalid: st.SearchStrategy[Any]

    @property
    def any(self) -> st.SearchStrategy[Any]:
        return self.valid | self.invalid


def _fields(channels: Sequence[str]) -> dict[str, Field]:
    intervals = st.lists(st.floats(0, 0.2), max_size=3)
    return {
        "task": Field(st.sampled_from(SAFE_TASKS), NON_STRINGS),
        "chan": Field(
            st.sampled_from([*channels, ""]), UNKNOWN_CHANNELS | INVALID_NAMES | NON_STRINGS
        ),
        "id": Field(
            st.just(ID_SLOT) | st.sampled_from(["", 0, False, None]),
            st.text(max_size=140).filter(lambda s: not s.isascii() or len(s) > 128 or " " in s)
            | st.integers(1) | st.lists(st.integers(), min_size=1, max_size=2),
        ),
        "args": Field(
            st.lists(st.text(max_size=12), max_size=4) | st.just('["a", "b"]'),
            st.just(["x"] * 1025) | st.text(max_size=10) | st.lists(st.integers(), min_size=1),
        ),
        "delay": _numbers(st.floats(0, 0.5)),
        "run_at": _past_times(time.time()),
        "retries": _numbers(st.integers(0, 2).map(float)),
        "retry_intervals": Field(
            intervals | intervals.map(lambda xs: " ".join(map(str, xs))),
            st.lists(st.floats(max_value=-0.1), min_size=1, max_size=3)
            | st.just([0.01] * 65) | st.sampled_from([True, 5, {"a": 1}, "x y"]),
        ),
        "timeout": _numbers(st.floats(0, 30)),
        "ts": _numbers(st.floats(0, 2e9)),
        "dedup_key": Field(st.text(max_size=30), st.just("k" * 1025) | NON_STRINGS),
    }  # fmt: skip


def job_fields(channels: Sequence[str], *, nearly_valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """A job-shaped JSON object: any subset of the ingress fields with hostile or harmless
    values, or (`nearly_valid`) a valid job, one in three with one field spoiled; sometimes
    `channel` instead of `chan`, and unknown keys."""
    fields = _fields(channels)
    anything = {k: f.any for k, f in fields.items()}
    hostile = st.fixed_dictionaries({}, optional=anything) | st.fixed_dictionaries(
        {"task": anything.pop("task")}, optional=anything
    )
    valid = st.fixed_dictionaries(
        {"task": fields["task"].valid, "chan": fields["chan"].valid},
        optional={k: f.valid for k, f in fields.items() if k not in ("task", "chan", "run_at")},
    ) | st.fixed_dictionaries(
        {"task": fields["task"].valid, "run_at": fields["run_at"].valid},
        optional={"id": fields["id"].valid, "chan": fields["chan"].valid},
    )
    spoil = st.sampled_from(sorted(fields)).flatmap(
        lambda k: st.fixed_dictionaries({k: fields[k].invalid})
    )
    unspoiled: st.SearchStrategy[dict[str, Any]] = st.just({})
    spoiled = st.tuples(valid, st.one_of(spoil, unspoiled, unspoiled)).map(
        lambda p: {**p[0], **p[1]}
    )
    extra = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=2)

    def build(parts: tuple[dict[str, Any], dict[str, Any], bool]) -> dict[str, Any]:
        known, unknown, rename = parts
        message = {**unknown, **known}
        if rename and "chan" in message:
            message["channel"] = message.pop("chan")
        return message

    shapes = spoiled if nearly_valid else hostile
    return st.tuples(shapes, extra | st.just({}), st.booleans()).map(build)


def _encodings(channels: Sequence[str]) -> st.SearchStrategy[bytes | dict[str, Any]]:
    """A message: a job-shaped object (encoded later, with its id), or raw bytes."""
    objects = job_fields(channels, nearly_valid=False)
    cut = st.tuples(objects, st.integers(1, 40)).map(
        lambda pair: json.dumps(pair[0]).encode()[: -pair[1]] or b"{"
    )
    return st.one_of(
        objects,
        objects,
        objects,
        objects,
        objects,
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        cut,
        objects.map(lambda o: json.dumps(o).encode("utf-16")),
        objects.map(lambda o: b"\xef\xbb\xbf" + json.dumps(o).encode()),
        st.sampled_from(HAND_MADE),
    )


HAND_MADE = (
    b"", b" ", b"\n", b"null", b"[]", b"{}", b'""', b"0", b"\x00", b"{\x00}", b"\xff\xfe\xfd",
    b'{"task": "true", "task": 5}', b'{"task": NaN}', b'{"task": "true", "delay": Infinity}',
    b'{"task": "true", "chan": "default\\n"}', b'{"task": "true"', b'{"task": "\xff"}',
    b"{" * 5000, b"[" * 100000, b'{"task": "true", "args": "[\\"a\\"]"}',
)  # fmt: skip


def examples(strategy: st.SearchStrategy[Any], n: int, *, seed: int) -> list[Any]:
    """Up to `n` values drawn by hypothesis (generate phase only, no database, seeded)."""
    drawn: list[Any] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn[:n]


@dataclass
class HostileMessages:
    """Hostile prepare-queue messages and what the harness expects of them."""

    raw: list[bytes]
    valid: int  # how many parse into a job for an existing channel
    invalid: int  # how many must be dead-lettered


def hostile_messages(
    n: int, *, channels: Sequence[str], default_channel: str, seed: int, id_prefix: str
) -> HostileMessages:
    """`n` hostile messages: hypothesis-drawn (a quarter of them nearly valid jobs), hand-made
    bytes, and a few over 256 KiB."""
    drawn = examples(job_fields(channels, nearly_valid=True), n // 4, seed=seed)
    drawn += examples(_encodings(channels), n - len(drawn), seed=seed)
    rng = random.Random(seed)
    while len(drawn) < n:  # hypothesis may draw fewer than asked
        drawn.append(rng.randbytes(rng.randrange(64)))
    raw = [_encode(item, f"{id_prefix}{i}") for i, item in enumerate(drawn)]
    for i in range(0, n, max(1, n // 8)):  # oversized: a valid job padded past the limit
        raw[i] = json.dumps({"task": "true", "ts": "1" * (257 * 1024)}).encode()
    known = set(channels)
    valid = sum(_is_valid(m, default_channel, known) for m in raw)
    return HostileMessages(raw=raw, valid=valid, invalid=len(raw) - valid)


def _encode(item: bytes | dict[str, Any], job_id: str) -> bytes:
    if isinstance(item, bytes):
        return item
    message = {k: (job_id if v == ID_SLOT else v) for k, v in item.items()}
    return json.dumps(message, ensure_ascii=len(job_id) % 2 == 0).encode()


def _is_valid(raw: bytes, default_channel: str, channels: set[str]) -> bool:
    """The oracle: the runner's own parser, plus "the channel exists"."""
    try:
        job = parse_message(raw, default_channel=default_channel, now=time.time())
    except (InvalidJob, InvalidChannel):
        return False
    except RecursionError:  # the parser must refuse these too: they are dead letters
        return False
    return job.channel in channels


# -- HTTP ---------------------------------------------------------------------------------


KINGTASK = ("/api/v1/task", "/api/task")
# (method, path template); {id} {name} {uuid} {date} are filled with hostile values.
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("GET", "/"), ("GET", "/status"), ("POST", "/push"), ("POST", "/queue"), ("GET", "/healthz"),
    ("POST", "/api/v1/task"),
    *((m, p + s) for p in KINGTASK for m, s in (
        ("POST", "/script"), ("POST", "/rpc"), ("GET", "/result"), ("GET", "/result/{uuid}"),
        ("GET", "/result/success/{date}"), ("GET", "/result/failure/{date}"),
        ("GET", "/count/undo"),
    )),
    ("POST", "/api/jobs"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{id}"),
    ("GET", "/api/jobs/{id}/wait"), ("POST", "/api/jobs/{id}/cancel"),
    ("GET", "/api/channels"), ("POST", "/api/channels"), ("GET", "/api/channels/{name}"),
    ("PATCH", "/api/channels/{name}"), ("DELETE", "/api/channels/{name}"),
    ("POST", "/api/channels/{name}/pause"), ("POST", "/api/channels/{name}/resume"),
    ("GET", "/api/stats"), ("GET", "/api/dead-jobs"), ("POST", "/api/dead-jobs/{id}/retry"),
    ("DELETE", "/api/dead-jobs/{id}"), ("GET", "/api/dead-letters"),
    ("POST", "/api/dead-letters/{id}/retry"), ("DELETE", "/api/dead-letters/{id}"),
    ("GET", "/api/openapi.json"),
)  # fmt: skip
OTHER_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO")
BAD_CONTENT_TYPES = (
    "text/plain", "application/xml", "application/octet-stream", "image/png", "application/jsonx",
    "multipart/form-data", "multipart/form-data; boundary=", "application/x-www-form-urlencoded",
    "application/json; charset=latin-1", ";;;", "",
)  # fmt: skip
HUGE_BODY = b'{"task": "true", "pad": "' + b"x" * (1024 * 1024 + 512) + b'"}'


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    form: dict[str, str] | None = None  # sent as multipart/form-data by the client
    creates: str = ""  # which API's answer carries a new job id ("push", "native", "kingtask")


def _path_values() -> st.SearchStrategy[dict[str, str]]:
    texts = st.text(min_size=1, max_size=60) | st.sampled_from(
        ["..", "../..", "%00", "a/b", "x" * 5000, " ", "null", "-1", "2024-13-45", "9999-99-99",
         "0000-00-00", "2024-02-30", "\u0661\u0662\u0663\u0664-\u0665\u0666-\u0667\u0668"]
    )  # fmt: skip
    names = HTTP_CHANNELS | INVALID_NAMES.filter(bool) | texts
    return st.fixed_dictionaries({"id": texts, "name": names, "uuid": texts, "date": texts})


def _kingtask_fields() -> st.SearchStrategy[dict[str, Any]]:
    safe_urls = st.sampled_from(["http://127.0.0.1:1/", "https://127.0.0.1:1/x", "ftp://x/",
                                 "http://", "http://[::1", "http://a b/", "", "javascript:1"])  # fmt: skip
    return st.fixed_dictionaries(
        {},
        optional={
            "bin_name": st.text(max_size=20) | st.sampled_from(["../etc/passwd", "a/b", ".."]),
            "args": st.text(max_size=30) | JSON_VALUES,
            "start_time": _past_times(time.time()).valid
            | st.floats(max_value=-0.001)
            | NUMBER_JUNK,
            "time_interval": st.sampled_from(["0.1", "0.1 0.1", "", "-1", "x", "1e999"]),
            "max_run_time": _numbers(st.floats(0, 5)).any,
            "method": st.sampled_from(["GET", "get", "POST", "PUT", "DELETE", "TRACE", "", " "])
            | NON_STRINGS,
            "url": safe_urls
            | st.text(alphabet=st.characters(exclude_characters=":/"), max_size=30),
            "channel": HTTP_CHANNELS | INVALID_NAMES | NON_STRINGS,
        },
    )


def _channel_fields() -> st.SearchStrategy[dict[str, Any]]:
    digits = st.sampled_from(["²", "\u0661", "007", "-3", "1e3", "0x1", "99999999999999999999", ""])
    return st.fixed_dictionaries(
        {},
        optional={
            "name": HTTP_CHANNELS | INVALID_NAMES | NON_STRINGS,
            "distinct": JSON_SCALARS,
            "worker": digits | JSON_SCALARS,
            "worker_count": digits | JSON_SCALARS,
            "paused": JSON_SCALARS,
            "timeout": _numbers(st.floats(0, 30)).any,
            "retries": _numbers(st.integers(0, 2).map(float)).any,
            "retry_intervals": JSON_VALUES,
        },
    )


def _bodies(channels: Sequence[str]) -> st.SearchStrategy[tuple[str, Any]]:
    """(kind, payload): how the body is sent and what is in it."""
    objects = (
        job_fields(channels, nearly_valid=False)
        | job_fields(channels, nearly_valid=True)
        | _kingtask_fields()
        | _channel_fields()
    )
    return st.one_of(
        st.tuples(st.just("json"), objects),
        st.tuples(st.just("json"), objects),
        st.tuples(st.just("json-value"), JSON_VALUES),
        st.tuples(st.just("form"), objects),
        st.tuples(st.just("multipart"), objects),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
        st.tuples(st.just("huge"), st.none()),
        st.tuples(st.just("deep"), st.none()),
        st.tuples(st.just("none"), st.none()),
    )


def http_requests(n: int, *, channels: Sequence[str], seed: int, id_prefix: str) -> list[Request]:
    """`n` malformed (and sometimes well-formed) requests over every endpoint."""
    strategy = st.tuples(
        st.sampled_from(ENDPOINTS),
        st.sampled_from(OTHER_METHODS) | st.none(),
        _path_values(),
        st.dictionaries(
            st.sampled_from(["channel", "state", "offset", "limit", "timeout", "uuid", "task"]),
            st.text(max_size=20) | st.sampled_from(["-1", "1e309", "nan", "99999999", "²"]),
            max_size=3,
        ),
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(BAD_CONTENT_TYPES)),
        _bodies(channels),
    )
    drawn = examples(strategy, n, seed=seed)
    return [_request(item, f"{id_prefix}{i}") for i, item in enumerate(drawn)]


def _request(item: tuple[Any, ...], job_id: str) -> Request:
    (method, template), other_method, values, query, content_type, (kind, payload) = item
    path = template.format(**{k: quote(v, safe="") for k, v in values.items()})
    if isinstance(payload, dict):
        payload = {k: (job_id if v == ID_SLOT else v) for k, v in payload.items()}
    headers, body, form = _body(kind, payload)
    if content_type is not None and kind in ("json", "bytes", "huge", "deep"):
        headers = {"Content-Type": content_type}
    method = other_method or method
    creates = {"/push": "push", "/api/jobs": "native"}.get(template, "")
    if template.startswith(KINGTASK):
        creates = "kingtask"
    return Request(method, path, query, headers, body, form, creates if method == "POST" else "")


def _body(kind: str, payload: Any) -> tuple[dict[str, str], bytes | None, dict[str, str] | None]:
    encoders: dict[
        str, Callable[[], tuple[dict[str, str], bytes | None, dict[str, str] | None]]
    ] = {
        "json": lambda: (_json_type(), json.dumps(payload).encode(), None),
        "json-value": lambda: (_json_type(), json.dumps(payload).encode(), None),
        "form": lambda: (
            {"Content-Type": "application/x-www-form-urlencoded"},
            "&".join(f"{quote(str(k))}={quote(_text(v))}" for k, v in payload.items()).encode(),
            None,
        ),
        "multipart": lambda: ({}, None, {str(k): _text(v) for k, v in payload.items()}),
        "bytes": lambda: ({"Content-Type": "application/json"}, payload, None),
        "huge": lambda: (_json_type(), HUGE_BODY, None),
        "deep": lambda: (_json_type(), b"[" * 50_000 + b"]" * 50_000, None),
        "none": lambda: ({}, None, None),
    }
    return encoders[kind]()


def _json_type() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# Malformed at the protocol level: sent as raw bytes on a fresh connection.
RAW_REQUESTS = (
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon-Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"task\"",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
    b"GET /status?channel=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /queue HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 12\r\n\r\nworker=%ZZ%Z",
)  # fmt: skip
