"""Parsing ingress messages: every input is either a valid Job or an InvalidJob/InvalidChannel."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskrunner.errors import InvalidChannel, InvalidJob
from taskrunner.models import Job
from taskrunner.parsing import parse_message
from taskrunner.validation import Limits, parse_intervals

NOW = 1_700_000_000.0


def parse(raw: bytes | str) -> Job:
    return parse_message(raw, default_channel="default", now=NOW)


def test_upstream_message() -> None:
    job = parse(b'{"task":"php artisan report:daily --force","chan":"biz","ts":1491800000}')
    assert (job.task, job.channel, job.ts) == (
        "php artisan report:daily --force",
        "biz",
        1491800000,
    )
    assert job.argv(shell=False) == ("php", "artisan", "report:daily", "--force")
    assert job.argv(shell=True) == ("/bin/sh", "-c", "php artisan report:daily --force")


def test_quoting_and_args() -> None:
    assert parse('{"task": "echo \'a b\' c"}').argv(shell=False) == ("echo", "a b", "c")
    job = parse('{"task": "printf", "args": ["%s", "a b"]}')
    assert job.argv(shell=False) == ("printf", "%s", "a b")


def test_delay_and_run_at_and_intervals() -> None:
    assert parse('{"task": "x", "delay": 5}').run_at == NOW + 5
    assert parse('{"task": "x", "run_at": "1800000000"}').run_at == 1800000000
    job = parse('{"task": "x", "retry_intervals": "60 600 3600"}')
    assert job.retry_intervals == (60, 600, 3600) and job.retries == 3
    assert parse_intervals([1, 2.5]) == (1.0, 2.5)


def test_record_round_trip() -> None:
    job = parse('{"task": "a b", "chan": "c", "id": "i", "args": ["x"], "timeout": 2, "ts": 3}')
    record = job.to_record()
    assert Job.from_record(record) == job


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ('{"task": "x", "id": 42}', "id", "42"),
        ('{"task": "x", "id": 0}', "id", "0"),  # a real id, not "no id"
        ('{"task": "x", "id": -7}', "id", "-7"),
        ('{"task": "x", "id": 12345678901234567890}', "id", "12345678901234567890"),
        ('{"task": "x", "id": 42.0}', "id", "42"),
        ('{"task": "x", "id": ""}', "id", None),  # empty: a new uuid, as when absent
        ('{"task": "x", "id": null}', "id", None),
        ('{"task": "x", "timeout": "30"}', "timeout_s", 30.0),
        ('{"task": "x", "timeout": " 2.5 "}', "timeout_s", 2.5),
        ('{"task": "x", "retries": "3"}', "retries", 3),
        ('{"task": "x", "retries": "2.0"}', "retries", 2),
        ('{"task": "x", "ts": "1491800000"}', "ts", 1491800000),
        ('{"task": "x", "delay": "5"}', "run_at", NOW + 5),
        ('{"task": "x", "retry_intervals": ["1", 2]}', "retry_intervals", (1.0, 2.0)),
        ('{"task": "x", "chan": ""}', "channel", "default"),
        ('{"task": "x", "chan": "报表"}', "channel", "报表"),
    ],
)
def test_forms_producers_send(raw: str, field: str, value: object) -> None:
    """The forms upstream's producers really send, for fields upstream ignored (issue 14)."""
    got = getattr(parse(raw), field)
    if value is None:  # a generated id
        assert re.fullmatch(r"[0-9a-f-]{36}", got)
    else:
        assert got == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"task": "x", "timeout": "30s"}', '"timeout" must be a number or a numeric string'),
        ('{"task": "x", "retries": "three"}', '"retries" must be a number'),
        ('{"task": "x", "id": 4.5}', '"id" must be a string or a whole number'),
        ('{"task": "x", "id": true}', '"id" must be a string or a whole number'),
        ('{"task": "x", "id": [1]}', '"id" must be a string or a whole number'),
        ('{"task": "x", "ts": "yesterday"}', '"ts" must be a number'),
    ],
)
def test_values_that_cannot_mean_the_field_are_refused_with_the_reason(
    raw: str, reason: str
) -> None:
    with pytest.raises(InvalidJob, match=re.escape(reason)):
        parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"task": "x", "delay": -1}',
        '{"task": "x", "delay": 1, "run_at": 2}',
        '{"task": "x", "retries": 1.5}',
        '{"task": "x", "timeout": true}',
        '{"task": "x", "id": "has space"}',
        '{"task": "x", "ts": NaN}',
        '{"task": "x", "retry_intervals": {"a": 1}}',
    ],
)
def test_invalid_fields(raw: str) -> None:
    with pytest.raises(InvalidJob):
        parse(raw)


def test_size_limit() -> None:
    with pytest.raises(InvalidJob, match="over the limit of 100"):
        parse_message(
            json.dumps({"task": "x" * 200}),
            default_channel="d",
            now=NOW,
            limits=Limits(max_message_bytes=100),
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "task": st.text(max_size=30) | json_values,
        "chan": st.text(max_size=10) | json_values,
        "ts": json_values,
        "args": json_values,
        "delay": json_values,
        "timeout": json_values,
        "retries": json_values,
        "retry_intervals": json_values,
        "id": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | fields.map(lambda d: json.dumps(d).encode()))
def test_any_input_is_a_job_or_a_clear_refusal(raw: bytes) -> None:
    try:
        job = parse(raw)
    except (InvalidJob, InvalidChannel) as exc:
        assert str(exc)  # a reason to show in the dead letter
    else:
        assert job.task.strip() and job.argv(shell=False)


def test_note_is_free_text_kept_on_the_record() -> None:
    job = parse('{"task": "x", "note": "asked by ops: nightly report \\u00e9"}')
    assert job.note == "asked by ops: nightly report \u00e9"
    assert job.to_record()["note"] == job.note and Job.from_record(job.to_record()) == job
    assert parse('{"task": "x", "note": ""}').note is None
    assert "note" not in parse('{"task": "x"}').to_record()


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("n" * 1001, '"note" must be a string of at most 1000 characters'),
        (5, '"note" must be a string of at most 1000 characters'),
        ("\ud800", '"note" is not valid Unicode text'),
    ],
)
def test_note_is_refused_when_too_long_not_text_or_not_unicode(note: object, message: str) -> None:
    with pytest.raises(InvalidJob, match=re.escape(message)):
        parse(json.dumps({"task": "x", "note": note}))
    assert parse(json.dumps({"task": "x", "note": "a\0b"})).note == "a\0b"  # not an argv
