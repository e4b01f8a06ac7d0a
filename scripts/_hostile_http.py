"""Hostile HTTP requests for scripts/chaos.py (scenario "hostile"): hypothesis-drawn requests
to every endpoint with malformed paths, queries, content types and bodies, and raw bytes that
are malformed at the protocol level. The bodies reuse the message strategies of
_hostile_messages.py, so every valid job they carry is as harmless as a valid hostile message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from scripts._hostile_messages import (
    HTTP_CHANNELS,
    ID_SLOT,
    INVALID_NAMES,
    JSON_SCALARS,
    JSON_VALUES,
    NON_STRINGS,
    NUMBER_JUNK,
    examples,
    job_fields,
    number_field,
    past_time_field,
)

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
            "start_time": past_time_field(time.time()).valid
            | st.floats(max_value=-0.001)
            | NUMBER_JUNK,
            "time_interval": st.sampled_from(["0.1", "0.1 0.1", "", "-1", "x", "1e999"]),
            "max_run_time": number_field(st.floats(0, 5)).any,
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
            "timeout": number_field(st.floats(0, 30)).any,
            "retries": number_field(st.integers(0, 2).map(float)).any,
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
