"""Scenario "hostile" of scripts/chaos.py: random and malformed messages
(_hostile_messages.py) mixed into the prepare queue with the load, and malformed HTTP requests
to every endpoint (_hostile_http.py). Checked: every invalid message is dead-lettered, every
valid one becomes a job or a refused duplicate, no HTTP request gets a 5xx or no answer, and the
load's own checks hold."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from scripts._chaos_checks import (
    Report,
)
from scripts._chaos_cluster import (
    Cluster,
    load_with,
    log,
)
from scripts._chaos_jobs import CHANNELS, DEFAULT_CHANNELS, Planned, plan_load
from scripts._chaos_scenario import (
    Sizes,
    finish,
    scenario,
)
from scripts._hostile_http import RAW_REQUESTS, Request, http_requests
from scripts._hostile_messages import HostileMessages, hostile_messages


async def scenario_hostile(sizes: Sizes, rng: random.Random) -> Report:
    report = Report(4, "hostile input: prepare queue and HTTP (3 runners)")
    known = [*DEFAULT_CHANNELS, *CHANNELS]
    log(f"drawing {sizes.hostile:,} hostile messages and {sizes.http:,} HTTP requests (hypothesis)")
    hostile = await asyncio.to_thread(
        hostile_messages, sizes.hostile, channels=known, default_channel="default",
        seed=rng.randrange(2**32), id_prefix="h-",
    )  # fmt: skip
    requests = await asyncio.to_thread(
        http_requests, sizes.http, channels=known, seed=rng.randrange(2**32), id_prefix="w-"
    )
    async with scenario("hostile", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs // 3, rng, contended=False)
        mixed: list[Planned | bytes] = [*planned, *hostile.raw]
        rng.shuffle(mixed)
        http = asyncio.create_task(send_hostile_http(cluster, requests))
        await load_with(cluster, mixed, sizes.load_s)
        answers = await http
        report.figures["refused_planned"] = 0
        outcome = await finish(cluster, report, planned)
        check_hostile(report, hostile, answers, outcome, {p.id for p in planned})
    return report


UNPARSEABLE_METHODS = frozenset({"FOO"})  # aiohttp's parser knows the standard ones only


@dataclass
class Answers:
    """What the runners answered to hostile HTTP requests."""

    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    no_answer: list[str] = field(default_factory=list)
    created: set[str] = field(default_factory=set)  # job ids of accepted requests
    refused: int = 0  # requests refused as duplicates of live jobs
    unsendable: int = 0  # requests aiohttp's client refuses to send
    closed: int = 0  # connections closed on a method the server cannot parse


async def send_hostile_http(cluster: Cluster, requests: Sequence[Request]) -> Answers:
    answers = Answers()
    ports = [s.port for s in cluster.slots]
    queue = list(enumerate(requests))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

        async def worker() -> None:
            while queue:
                i, request = queue.pop()
                await send_one(session, ports[i % len(ports)], request, answers)

        await asyncio.gather(*(worker() for _ in range(16)))
    raws = enumerate(RAW_REQUESTS * 2)
    await asyncio.gather(*(send_raw(ports[i % len(ports)], raw, answers) for i, raw in raws))
    return answers


async def send_one(
    session: aiohttp.ClientSession, port: int, request: Request, answers: Answers
) -> None:
    url = f"http://127.0.0.1:{port}{request.path}"
    what = f"{request.method} {request.path[:80]} {request.headers} {(request.body or b'')[:80]!r}"
    try:
        data: Any = request.body if request.form is None else _form(request.form)
        async with session.request(
            request.method, url, params=request.query, headers=request.headers, data=data,
            skip_auto_headers=("Content-Type",) if "Content-Type" in request.headers else (),
        ) as response:  # fmt: skip
            body = await response.read()
    except ValueError:  # the client itself refuses to send it (e.g. a control character)
        answers.unsendable += 1
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        if request.method in UNPARSEABLE_METHODS:  # 400 and close, maybe before the body is sent
            answers.closed += 1
        else:
            answers.no_answer.append(f"{what}: {exc!r}")
        return
    answers.statuses[response.status] += 1
    if response.status >= 500:
        answers.server_errors.append(f"{response.status} {what}: {body[:200]!r}")
    elif response.status < 300 and request.creates:
        try:
            _note_created(request.creates, body, answers)
        except (ValueError, KeyError, TypeError):
            answers.server_errors.append(
                f"unreadable {response.status} answer to {what}: {body[:200]!r}"
            )
    elif response.status == 409 and request.creates == "native" and b"duplicate_of" in body:
        answers.refused += 1


def _form(fields: dict[str, str]) -> aiohttp.FormData:
    """A multipart body (aiohttp's client cannot send a non-ASCII field name: quoted)."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name if name.isascii() else quote(name), value)
    form.add_field("upload", b"\x00\x01", filename="x.bin")
    return form


def _note_created(api: str, body: bytes, answers: Answers) -> None:
    data = json.loads(body)
    if api == "kingtask" and isinstance(data, str):
        answers.created.add(data)
    elif api == "native":
        answers.created.add(data["id"])
    elif api == "push" and data["data"]["result"]:
        answers.created.add(data["data"]["id"])
    elif api == "push":
        answers.refused += 1


async def send_raw(port: int, payload: bytes, answers: Answers) -> None:
    """A request malformed at the protocol level: any answer but a 5xx is fine."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        answers.no_answer.append(f"raw {payload[:40]!r}: cannot connect: {exc}")
        return
    try:
        writer.write(payload)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 3)  # some wait for a body: none comes
    except (OSError, TimeoutError):
        status = b""
    finally:
        writer.close()
    if status.startswith(b"HTTP/1.1 5") or status.startswith(b"HTTP/1.0 5"):
        answers.server_errors.append(f"raw {payload[:60]!r}: {status!r}")
    elif status[:5] == b"HTTP/":
        answers.statuses[int(status.split()[1])] += 1


def check_hostile(
    report: Report, hostile: HostileMessages, answers: Answers, outcome: dict[str, Any],
    planned_ids: set[str],
) -> None:  # fmt: skip
    found: dict[str, Any] = outcome["records"]
    stats = outcome["stats"]
    report.row(
        "hostile messages pushed (valid / invalid)",
        f"{len(hostile.raw):,} ({hostile.valid:,} / {hostile.invalid:,})",
    )
    dead = stats.get("dead_letters", 0)
    report.row(
        "dead-lettered", dead, f"== invalid: {hostile.invalid:,}", ok=dead == hostile.invalid
    )
    hostile_jobs = len(set(found) - planned_ids - answers.created)
    refused = stats.get("refused", 0) - answers.refused
    unaccounted = hostile.valid - hostile_jobs - refused
    report.row("valid hostile messages: jobs + refused duplicates", f"{hostile_jobs:,} + {refused:,}",
               f"== valid: {hostile.valid:,}", ok=unaccounted == 0)  # fmt: skip
    report.figures["lost"] = report.figures.get("lost", 0) + max(0, unaccounted)
    report.row(
        "HTTP requests (2xx / 4xx / 5xx)",
        _status_summary(answers.statuses),
        note=f"{answers.unsendable} the client would not send, {answers.closed} unknown"
        " methods answered by closing the connection",
    )
    report.at_most("HTTP 5xx answers", len(answers.server_errors), 0)
    report.at_most("HTTP requests with no answer", len(answers.no_answer), 0)
    report.row("jobs created through hostile HTTP", len(answers.created))
    report.violations += [
        f"scenario 4: {e}" for e in (answers.server_errors + answers.no_answer)[:8]
    ]


def _status_summary(statuses: Counter[int]) -> str:
    classes = Counter[int]()
    for status, n in statuses.items():
        classes[status // 100] += n
    return f"{sum(statuses.values()):,} ({classes[2]:,} / {classes[4]:,} / {classes[5]:,})"
