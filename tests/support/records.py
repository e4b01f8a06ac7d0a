"""Job records as the store keeps them in Redis (hashes of text fields), for tests of their
decoding and for the decode-cost measurement."""

from __future__ import annotations

from taskrunner.models import Job


def stored_fields(**changes: str) -> dict[str, str]:
    """A finished command job's hash as the store writes it (enqueue, claim, finish: 25
    fields), with `changes` applied ("" stores an empty value)."""
    job = Job(
        id="0b6a1c9e-5d1f-4f7e-9a43-2f0c6de1a7b5",
        task="/usr/bin/report",
        channel="biz",
        args=("--day", "2024-05-01", "--format", "csv"),
        ts=1714521600.5,
        retries=3,
        retry_intervals=(60.0, 600.0, 3600.0),
        timeout_s=120.0,
        dedup_key="report:2024-05-01",
        note="asked for by billing",
        created_at=1714521601.25,
    )
    fields = {
        **job.to_record(),
        "dedup": "report:2024-05-01",
        "state": "failed",
        "attempt": "2",
        "runner": "host-a:4242:1f2e",
        "started_at": "1714521602.5",
        "finished_at": "1714521605.75",
        "duration": "3.250000",
        "exit_code": "",
        "signal": "9",
        "pid": "31337",
        "stdout": "rows: 120\n",
        "stderr": "killed\n",
        "stdout_truncated": "0",
        "stderr_truncated": "1",
        "error": "killed by signal 9 (SIGKILL)",
    }
    return {**fields, **changes}
