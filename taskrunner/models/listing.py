"""A job listing's question and its place in the answer: `JobQuery` (filters, page size and
where the page starts) and the opaque cursor that names a place (`Position`).

Jobs are listed newest first by creation time across every channel (the store's job index);
a cursor names the last job a page showed, so a page that follows it neither repeats nor
skips a job however many are created in between. `parse_job_query` reads the filters from
text (an HTTP query, CLI options) and says which parameter is wrong."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from taskrunner.errors import InvalidJob
from taskrunner.models.job import JobState
from taskrunner.models.record import parse_state
from taskrunner.validation import JOB_ID_RE, plain_number, validate_channel_name

DEFAULT_PAGE: Final = 50
MAX_COMMAND_FILTER: Final = 1000  # characters of a `command` filter
MAX_TIME_S: Final = 10_000_000_000  # a `since`/`until` (the year 2286)
SCAN_WINDOW: Final = 1000  # jobs a page filtered job by job (state, command) looks at, at most
CURSOR_VERSION: Final = "1"
# The query parameters a listing takes (besides `limit`), in the order help texts give them.
QUERY_PARAMETERS: Final = ("channel", "state", "since", "until", "command", "cursor")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A job's place in the index: its creation time in microseconds, then its id (a tie of
    times is ordered by id, as Redis orders a sorted set)."""

    created_us: int
    job_id: str

    def cursor(self) -> str:
        """The opaque cursor text that names this place."""
        raw = f"{CURSOR_VERSION}:{self.created_us}:{self.job_id}".encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def from_cursor(cls, text: str) -> Position:
        """The place a cursor names; ValueError saying what is wrong with it."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raw = ""
        version, _, rest = raw.partition(":")
        created, _, job_id = rest.partition(":")
        created_ok = created.isascii() and created.isdigit() and len(created) <= 20
        if version != CURSOR_VERSION or not created_ok or not JOB_ID_RE.match(job_id):
            raise ValueError(
                f"{text[:40]!r} is not a cursor of this listing: pass the `next_cursor` of the"
                " page before as it is, or leave it out for the first page"
            )
        return cls(int(created), job_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """Which jobs to list: all filters optional. `since`/`until`: creation time bounds in unix
    seconds (both inclusive); `command`: a substring of the command (case-insensitive);
    `after`: list the jobs created before this place (the previous page's last)."""

    channel: str | None = None
    state: JobState | None = None
    since: float | None = None
    until: float | None = None
    command: str | None = None
    after: Position | None = None
    limit: int = DEFAULT_PAGE

    @property
    def scans(self) -> bool:
        """True when a filter is applied to each job (state, command): the index cannot answer
        it, so a page looks at a bounded window of the index and may come back short."""
        return self.command is not None or (
            self.state is not None and self.state is not JobState.RUNNING
        )

    def matches(self, state: str, command: str) -> bool:
        """Whether a job in `state` with this command passes the state and command filters."""
        if self.state is not None and state != self.state.value:
            return False
        return self.command is None or self.command.casefold() in command.casefold()


def parse_job_query(params: Mapping[str, str | None], *, limit: int) -> JobQuery:
    """A JobQuery from text parameters (QUERY_PARAMETERS; absent or "" = no filter).
    InvalidJob naming the parameter and what it takes when one is wrong."""

    def given(name: str) -> str | None:
        return params.get(name) or None

    channel = given("channel")
    if channel is not None:
        validate_channel_name(channel)
    try:
        state = parse_state(given("state"))
    except ValueError as exc:
        raise InvalidJob(f'parameter "state": {exc}') from None
    command = given("command")
    if command is not None and len(command) > MAX_COMMAND_FILTER:
        raise InvalidJob(
            f'parameter "command" is {len(command)} characters: give at most'
            f" {MAX_COMMAND_FILTER} (a part of the command is enough)"
        )
    cursor = given("cursor")
    try:
        after = None if cursor is None else Position.from_cursor(cursor)
    except ValueError as exc:
        raise InvalidJob(f'parameter "cursor": {exc}') from None
    since, until = _seconds(given("since"), "since"), _seconds(given("until"), "until")
    if since is not None and until is not None and since > until:
        raise InvalidJob(
            f'parameter "since" ({since}) is after "until" ({until}): swap them or widen the range'
        )
    return JobQuery(
        channel=channel, state=state, since=since, until=until, command=command, after=after,
        limit=limit,
    )  # fmt: skip


def _seconds(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    value = plain_number(text)
    if not 0 <= value <= MAX_TIME_S:  # False for NaN
        raise InvalidJob(
            f'parameter "{name}" must be a creation time in unix seconds (e.g. 1767225600.5),'
            f" from 0 to {MAX_TIME_S}, got {text!r}"
        )
    return value
