"""Hostile prepare-queue messages for scripts/chaos.py (scenario "hostile"), and the value
strategies the HTTP side (_hostile_http.py) draws its bodies from.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from taskrunner.errors import InvalidChannel, InvalidJob
from taskrunner.parsing import parse_message
from taskrunner.validation import CHANNEL_NAME_REFUSED, MAX_CHANNEL_NAME_BYTES, MAX_SECONDS

ID_SLOT = "\x00id-slot\x00"  # replaced by a unique job id when the message is built
SAFE_TASKS = (
    "true", "false", "/bin/true", "echo hostile", "sleep 0.01", "printf %s x", "true --flag",
    "echo 'unbalanced", "", "   ", "\x00", "true\x00x", "héllo wörld", "echo $HOME;rm",
)  # fmt: skip
# Channel names a hostile message may use; unknown-but-valid ones never exist (the HTTP side
# creates channels only as `httpq-*`).
UNKNOWN_CHANNELS = st.from_regex(r"nochan-[a-z0-9]{1,12}", fullmatch=True)
HTTP_CHANNELS = st.from_regex(r"httpq-[a-z0-9]{1,12}", fullmatch=True)
# Invalid: a refused character somewhere (lone surrogates aside: JSON cannot carry them), or too long
REFUSED_CHARS = st.sampled_from(
    [chr(c) for lo, hi, _ in CHANNEL_NAME_REFUSED if lo < 0xD800 for c in range(lo, hi + 1)]
)
INVALID_NAMES = (
    st.just("")
    | st.tuples(st.text(max_size=30), REFUSED_CHARS, st.text(max_size=30)).map("".join)
    | st.text(min_size=MAX_CHANNEL_NAME_BYTES + 1, max_size=MAX_CHANNEL_NAME_BYTES + 20)
)

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


def number_field(valid: st.SearchStrategy[float]) -> Field:
    """A safe valid number (also as a numeric string), or something no number field accepts."""
    invalid = (
        st.floats(max_value=-0.001)
        | st.floats(min_value=MAX_SECONDS * 2, allow_infinity=True)
        | NUMBER_JUNK
    )
    return Field(valid | valid.map(str), invalid)


def past_time_field(now: float) -> Field:
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
            # 0 and 42 are ids like "0" and "42" since issue 14: only the slot's unique ids
            st.just(ID_SLOT) | st.sampled_from(["", False, None]),
            st.text(max_size=140).filter(lambda s: not s.isascii() or len(s) > 128 or " " in s)
            | st.lists(st.integers(), min_size=1, max_size=2),
        ),
        "args": Field(
            st.lists(st.text(max_size=12), max_size=4) | st.just('["a", "b"]'),
            st.just(["x"] * 1025) | st.text(max_size=10) | st.lists(st.integers(), min_size=1),
        ),
        "delay": number_field(st.floats(0, 0.5)),
        "run_at": past_time_field(time.time()),
        "retries": number_field(st.integers(0, 2).map(float)),
        "retry_intervals": Field(
            intervals | intervals.map(lambda xs: " ".join(map(str, xs))),
            st.lists(st.floats(max_value=-0.1), min_size=1, max_size=3)
            | st.just([0.01] * 65) | st.sampled_from([True, 5, {"a": 1}, "x y"]),
        ),
        "timeout": number_field(st.floats(0, 30)),
        "ts": number_field(st.floats(0, 2e9)),
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
