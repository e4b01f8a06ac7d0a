"""HTTP requests to an in-process runner's API, decoded for assertions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from taskrunner.runner import Runner


def base_url(runner: Runner) -> str:
    return f"http://{runner.settings.http_addr}"


async def http(
    runner: Runner,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON or text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url(runner) + path, headers=headers, **kwargs) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text
