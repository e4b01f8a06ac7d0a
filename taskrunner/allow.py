"""Command allowlists: which programs a runner (`--allow`) and a channel (`allow`) let run.

The program of a job is argv[0] of the process the runner would start (see
`kingtask.program_of`). With no pattern, every program is allowed. A pattern without `/` is
matched, with `fnmatch` rules (case-sensitive `*`, `?`, `[seq]`, `[!seq]`), against the
program's last path component: `php` admits `php` and `/usr/bin/php`. A pattern with `/` is
matched against the whole program as written (no PATH lookup, no symlinks resolved), one
`/`-separated component at a time, so `*` never crosses a `/`: `/usr/local/bin/*` admits
`/usr/local/bin/report` but neither `/usr/local/bin/sub/report` nor a bare `report`. A program
with a `..` component is never admitted. When both the runner and the job's channel have
patterns, the program must be admitted by both. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, Final

from taskrunner.errors import InvalidJob, NotAllowed
from taskrunner.validation import check_count

MAX_PATTERNS: Final = 64
MAX_PATTERN_CHARS: Final = 256
SHOWN_PATTERNS: Final = 8  # patterns quoted in a refusal at most


def parse_patterns(value: Any, name: str = "allow") -> tuple[str, ...]:
    """Allowlist patterns from a list of strings (None or [] = no allowlist); InvalidJob naming
    `name` and the bad entry otherwise."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidJob(
            f'"{name}" must be a list of program names or globs, e.g. ["php", "/usr/local/bin/*"]'
        )
    check_count(value, name, MAX_PATTERNS, "patterns")
    return tuple(_pattern(item, name) for item in value)


def _pattern(item: Any, name: str) -> str:
    if not isinstance(item, str) or not item:
        raise InvalidJob(f'"{name}" entries must be non-empty strings, got {_brief(item)}')
    if len(item) > MAX_PATTERN_CHARS:
        raise InvalidJob(
            f'"{name}" entry {_brief(item)} is {len(item)} characters, over the limit of'
            f" {MAX_PATTERN_CHARS}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in item):
        raise InvalidJob(f'"{name}" entry {_brief(item)} contains control characters: remove them')
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob(f'"{name}" entry {_brief(item)} is not valid Unicode text') from None
    return item


def admits(patterns: Sequence[str], program: str) -> bool:
    """True if `program` may run under `patterns` (always, when there are none)."""
    if not patterns:
        return True
    parts = program.split("/")
    if not program or ".." in parts:
        return False
    return any(_matches(pattern, parts) for pattern in patterns)


def _matches(pattern: str, parts: list[str]) -> bool:
    if "/" not in pattern:
        return fnmatchcase(parts[-1], pattern)
    wanted = pattern.split("/")
    return len(wanted) == len(parts) and all(
        fnmatchcase(part, want) for part, want in zip(parts, wanted, strict=True)
    )


def check_program(
    program: str, *, runner: Sequence[str], channel: Sequence[str], channel_name: str
) -> None:
    """Raise NotAllowed, saying which allowlist refused `program` and what to change."""
    shown = _brief(program)
    if ".." in program.split("/") and (runner or channel):
        raise NotAllowed(
            f"program {shown} is not allowed: a path with '..' is never admitted by an"
            " allowlist; give the program's path without '..'"
        )
    if not admits(runner, program):
        raise NotAllowed(
            f"program {shown} is not allowed by this runner's --allow ({_listed(runner)}):"
            " run an allowed program, or add a pattern to --allow (TASKRUNNER_ALLOW)"
        )
    if not admits(channel, program):
        raise NotAllowed(
            f"program {shown} is not allowed in channel {channel_name!r} (allow:"
            f" {_listed(channel)}): run an allowed program, use another channel, or change"
            f" the channel's list (taskrunner queue update {channel_name} --allow PATTERN)"
        )


def _listed(patterns: Sequence[str]) -> str:
    shown = ", ".join(_brief(p) for p in patterns[:SHOWN_PATTERNS])
    more = len(patterns) - SHOWN_PATTERNS
    return f"{shown} and {more} more" if more > 0 else shown


def _brief(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"
