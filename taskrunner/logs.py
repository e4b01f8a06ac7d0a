"""Logging set-up: text lines (optionally coloured) or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

from aiohttp.http_exceptions import HttpProcessingError

CONTEXT_FIELDS: Final = ("job_id", "channel", "attempt", "pid", "stream")
COLOURS: Final = {
    "DEBUG": "\x1b[36m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[41m",
}
RESET: Final = "\x1b[0m"


class TextFormatter(logging.Formatter):
    def __init__(self, *, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.colour:
            return f"{COLOURS.get(record.levelname, '')}{line}{RESET}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (an unknown method, a broken header or chunk) as
    an ERROR with a traceback, though it is the client's mistake and was answered 400: anyone
    who can reach the port could fill the log with them. Such a record becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {reason}", ()
            record.levelno, record.levelname, record.exc_info = logging.INFO, "INFO", None
        return True


def configure(*, log_format: str = "text", colour: bool = False, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=colour and sys.stderr.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
