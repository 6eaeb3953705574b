"""Log formats of every lowbit process: ``text`` (default, for people) or ``json`` (one object per line,
for log pipelines), chosen with LOWBIT_LOG_FORMAT. Both carry the request id and job id of the current
context (service/request_context.py), so one id finds a request's API line and its job's worker lines.

>>> configure_logging("json", "info")          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from service import request_context

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``job_id`` (None when unset) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_context.request_id.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = request_context.job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request/job ids and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time logger level message [request_id=... job_id=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{k}={v}" for k in ("request_id", "job_id") if (v := getattr(record, k, None))]
        return f"{line} [{' '.join(ids)}]" if ids else line


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def install(handler: logging.Handler, fmt: str) -> None:
    """Give ``handler`` lowbit's format and context ids."""
    handler.setFormatter(formatter(fmt))
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


def configure_logging(fmt: str, level: str = "info") -> None:
    """Root logging of a lowbit process: one stderr handler in ``fmt``."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        install(handler, fmt)
    root.setLevel(level.upper())
