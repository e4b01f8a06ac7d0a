"""A job's stored record decoded once into `models.JobRecord` (models/stored.py): every field,
empty and unset values, damaged values, and records the real store wrote, read back through the
store, the native API, the CLI's table and the client."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from msgspec import UNSET

from taskrunner import Client
from taskrunner.cli import tables
from taskrunner.models import EMPTY_VALUES, SUMMARY_FIELDS, JobQuery, JobRecord, decode_record
from taskrunner.models.stored import DERIVED_FIELDS, REQUIRED_FIELDS
from tests.support.http import http
from tests.support.records import stored_fields
from tests.support.runners import RunnerHarness, stored_job, wait_state

FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(JobRecord))
MS_FIELDS = frozenset({"due_at"})  # kept in milliseconds in Redis

# A record with every field set to a value that is not its default.
EVERY_FIELD: dict[str, Any] = {
    "id": "j-1", "task": "/bin/report", "channel": "biz", "state": "dead", "final": True,
    "kind": "rpc", "attempt": 4, "retries": 3, "revived": 1, "args": ["a b", "ü", ""],
    "retry_intervals": [0.5, 60.0], "ts": 1491800000.25, "run_at": 1700000000.5,
    "created_at": 1700000001.0, "started_at": 1700000002.125, "finished_at": 1700000003.5,
    "duration": 1.375, "timeout": 7.5, "due_at": 1700000010.25, "exit_code": 3, "signal": 15,
    "pid": 4242, "http_status": 502, "signal_name": "SIGTERM", "error": "exit code 3",
    "runner": "host:1:ab", "dedup_key": "k", "dedup": "k", "method": "POST",
    "url": "http://x/y", "body": "{}", "note": "for billing", "handed_back": "drain",
    "stdout": "out\n", "stderr": "err\n", "stdout_truncated": True, "stderr_truncated": False,
    "task_truncated": True, "url_truncated": False, "error_truncated": True,
    "args_truncated": False, "cancel_requested": True,
}  # fmt: skip


def as_stored(view: dict[str, Any]) -> dict[str, str]:
    """A record's values as the store's writers keep them: text, flags "1"/"0", args as a JSON
    list, intervals space-separated, due_at in milliseconds."""
    stored = {}
    for name, value in view.items():
        if name in DERIVED_FIELDS:
            continue
        if isinstance(value, bool):
            stored[name] = "1" if value else "0"
        elif name == "args":
            stored[name] = json.dumps(value, ensure_ascii=False)
        elif name == "retry_intervals":
            stored[name] = " ".join(repr(v) for v in value)
        elif name in MS_FIELDS:
            stored[name] = repr(value * 1000)
        else:
            stored[name] = str(value)
    return stored


def test_every_field_round_trips_through_its_stored_text() -> None:
    assert set(EVERY_FIELD) == set(FIELDS), "a new JobRecord field needs a value here"
    record = decode_record(as_stored(EVERY_FIELD))
    assert record == JobRecord(**EVERY_FIELD)
    assert record.to_view() == EVERY_FIELD
    assert list(record.to_view()) == list(FIELDS)  # the JSON follows the model's order


def test_numeric_strings_decode_to_numbers_and_flags_to_booleans() -> None:
    record = decode_record(stored_fields(attempt="2", exit_code="0", duration="3.250000"))
    assert (record.attempt, record.exit_code, record.duration) == (2, 0, 3.25)
    assert (record.stdout_truncated, record.stderr_truncated) == (False, True)
    assert record.retry_intervals == [60.0, 600.0, 3600.0] and record.timeout == 120.0
    assert record.signal == 9 and record.signal_name == "SIGKILL"  # derived from the signal
    assert record.final and record.kind == "command"


def test_unset_fields_stay_out_of_the_view() -> None:
    record = decode_record({"id": "a", "task": "true", "channel": "c", "state": "queued"})
    assert record.exit_code is UNSET and record.stdout is UNSET and record.note is UNSET
    assert record.to_view() == {
        "id": "a", "task": "true", "channel": "c", "state": "queued", "final": False,
        "kind": "command",
    }  # fmt: skip


def test_an_empty_stored_value_is_null_except_for_text_that_cannot_be() -> None:
    stored = dict.fromkeys(set(FIELDS) - DERIVED_FIELDS, "")
    view = decode_record(stored).to_view()
    texts = {"id", "task", "channel", "state", "kind", "stdout", "stderr"}
    assert {name for name, value in view.items() if value == ""} == texts
    assert {name for name, value in view.items() if value is None} == set(stored) - texts
    assert view["final"] is False and "signal_name" not in view  # no signal: no name
    assert EMPTY_VALUES["stdout"] == "" and EMPTY_VALUES["exit_code"] is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("attempt", "two"), ("attempt", ""), ("exit_code", "1e400"), ("duration", "nan"),
        ("ts", "inf"), ("due_at", "soon"), ("args", "not json"), ("args", "[1, 2]"),
        ("args", '{"a": 1}'), ("args", "[" * 100_000), ("retry_intervals", "60 x"),
    ],
)  # fmt: skip
def test_a_value_that_does_not_decode_is_null(name: str, text: str) -> None:
    view = decode_record(stored_fields(**{name: text})).to_view()
    assert view[name] is None
    json.dumps(view, allow_nan=False)  # still valid JSON


def test_an_int_written_as_a_float_is_read_as_an_int() -> None:
    assert decode_record(stored_fields(attempt="3.0", pid="12")).attempt == 3


def test_derived_and_unknown_stored_fields_are_not_taken_as_they_are() -> None:
    record = decode_record(
        stored_fields(state="running", final="1", signal="", signal_name="SIGFAKE", extra="x")
    )
    assert record.final is False and record.signal is None and record.signal_name is UNSET
    assert "extra" not in record.to_view()


def test_a_damaged_record_without_its_identity_still_decodes() -> None:
    record = decode_record({"state": "cancelled"})
    assert {name: getattr(record, name) for name in REQUIRED_FIELDS} == {
        "id": "", "task": "", "channel": "", "state": "cancelled",
    }  # fmt: skip
    assert record.final


def test_listings_read_no_big_values() -> None:
    assert {"id", "task", "state", "error", "note", "args"} <= set(SUMMARY_FIELDS)
    assert not {"stdout", "stderr", "body", "final", "signal_name"} & set(SUMMARY_FIELDS)


def test_the_model_is_frozen() -> None:
    record = decode_record(stored_fields())
    with pytest.raises(AttributeError):
        record.state = "queued"  # type: ignore[misc]


# -- records the real store wrote -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_record_written_by_the_store_reads_back_the_same_everywhere(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    admission = await runner.service.submit(
        {"task": "sh", "args": ["-c", "echo hi; exit 3"], "note": "n", "retry_intervals": "0.1"},
        source="t",
    )
    record = await wait_state(runner.store, admission.job_id, "dead")  # retried once
    assert (record.exit_code, record.stdout, record.note, record.attempt) == (3, "hi\n", "n", 2)
    assert record.retry_intervals == [0.1] and record.final and record.duration is not UNSET

    status, view = await http(runner, "GET", f"/api/jobs/{admission.job_id}")
    assert status == 200 and view == record.to_view()

    [listed], _ = await runner.service.list_jobs(JobQuery(limit=5))
    assert listed.to_view() == {
        name: value
        for name, value in record.to_view().items()
        if name in SUMMARY_FIELDS or name in DERIVED_FIELDS or name == "kind"
    }
    [row] = tables.job_rows([listed])
    assert row[:4] == [admission.job_id, "default", "dead", 2] and row[-1] == "n"

    async with Client(redis_url) as client:
        result = await client.get(admission.job_id)
    assert result.record == record and (result.exit_code, result.final) == (3, True)


@pytest.mark.asyncio
async def test_a_full_stored_hash_reads_back_through_the_api(runners: RunnerHarness) -> None:
    runner = await runners.start()
    fields = stored_fields(stdout="ü\n")
    job_id = fields["id"]
    await runner.store.redis.hset(runner.store.keys.job(job_id), mapping=fields)
    record = await stored_job(runner.store, job_id)
    assert record == decode_record(fields)
    status, view = await http(runner, "GET", f"/api/jobs/{job_id}")
    assert status == 200 and view == record.to_view() and view["stdout"] == "ü\n"
    assert view["signal_name"] == "SIGKILL" and view["exit_code"] is None
