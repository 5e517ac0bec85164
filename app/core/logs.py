"""Log lines: text or one JSON object per line, both with an ISO 8601 UTC timestamp and the
request id of the request being served (``-``/null outside one).

``logging_config`` is a ``logging.config.dictConfig`` dict: ``python -m app`` applies it, and
hands it to uvicorn as ``log_config``, which applies it again in every worker process (uvicorn
configures logging in each child it spawns). Requests' access lines come from
``app.core.access.RequestContextMiddleware``, with their fields in ``record.access``.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

from app.core.config import Settings
from app.core.request_context import current_request_id

LogFormat = Literal["text", "json"]
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,  # uvicorn's extra level, below DEBUG
}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request whose handling emitted it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_LAYOUT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"  # a record that met no RequestIdFilter
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, the access
    line's fields when the record has them, and the formatted exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        line.update(getattr(record, "access", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr unless given) in the format, with the request-id filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """Every record, uvicorn's included, through one stderr handler at ``level``; uvicorn's
    own access log is turned off (``access_log=False``) and replaced by ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,  # the modules' loggers exist already
        "handlers": {
            "stderr": {"()": "app.core.logs.make_handler", "log_format": log_format},
        },
        "root": {"level": LEVELS[level], "handlers": ["stderr"]},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def settings_logging_config(settings: Settings) -> dict[str, Any]:
    return logging_config(settings.log_format, settings.log_level)


def configure_logging(settings: Settings) -> None:
    """Apply the settings' format and level to the root logger; applying it again replaces
    the handler, so it is idempotent."""
    logging.config.dictConfig(settings_logging_config(settings))
