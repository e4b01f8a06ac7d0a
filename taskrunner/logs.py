"""Logging set-up: text lines (optionally coloured) or one JSON object per line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Final, TextIO

from aiohttp.http_exceptions import HttpProcessingError

from taskrunner.aio import OncePerIteration
from taskrunner.errors import ConfigError

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
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging's, with the date and time formatted once a second, not once a line."""
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"

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


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, inside an event loop, writes the lines of one loop iteration in
    one write, soon after it (a runner logs two lines a job, and a write each was a tenth of
    its work); outside one, and at exit, at once."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._write_soon = OncePerIteration(self.flush).request

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        self._write_soon()

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # as StreamHandler.emit: a broken stderr must not stop the runner
                self.handleError(logging.makeLogRecord({"msg": "writing log lines failed"}))


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


LOG_FILE_NAME: Final = "sys.log"  # kingtask's name for its log file inside log_path


def configure(
    *,
    log_format: str = "text",
    colour: bool = False,
    level: str = "info",
    log_dir: Path | None = None,
) -> None:
    """Log to stderr, or with `log_dir` appended to `log_dir`/sys.log (ConfigError if it
    cannot be opened). `level` as Go's kingtask takes it too: debug, info, warn, error."""
    # No record field we print needs the caller's file and line, the thread or the process:
    # not collecting them makes each record cheaper (the Logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    stream = sys.stderr if log_dir is None else _open_log_file(log_dir)
    handler = BatchingHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=colour and stream.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())  # logging knows WARN as WARNING
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())


def _open_log_file(log_dir: Path) -> TextIO:
    path = log_dir / LOG_FILE_NAME
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(
            f"--log-path {log_dir}: cannot write {path}: {exc.strerror}: choose a writable directory"
        ) from exc
