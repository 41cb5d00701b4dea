"""Log lines: one JSON object each, `time`, `level`, `event` and the event's fields.

Nothing secret goes in: no headers, no query strings (signed media URLs and the /ws token travel
there), no request bodies, and a prompt only as its length unless PROMPTREEL_LOG_PROMPTS.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

#: Loggers that would write a line per provider poll, job start or migration step.
QUIET_LOGGERS = ("httpx", "httpcore", "procrastinate", "alembic")
_CORE_KEYS = ("time", "level", "event")
#: A URL's query string in a library's message (NiceGUI logs "<url> not found" for a path it has no page for).
_URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)\?[^\s#]*")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line: `event` plus `fields`."""
    logger.log(level, event, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a plain library message becomes `{"event": "log", "message": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line["event"] = record.getMessage()
            line.update((key, value) for key, value in fields.items() if key not in _CORE_KEYS)
        else:
            # Without query strings: a token or a signature sent to a mistyped path must not stay in the log.
            line.update(event="log", logger=record.name, message=_URL_QUERY.sub(r"\1?…", record.getMessage()))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)  # json escapes newlines: one line each


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process; safe to call twice."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "promptreel_json", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.promptreel_json = True  # type: ignore[attr-defined]  # our mark, found by getattr above
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # RequestLogMiddleware writes the one line per request; uvicorn's access line would be a second.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
