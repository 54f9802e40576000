"""Log lines as text (the default) or as one JSON object per line (SEQCAST_LOG_FORMAT=json).

Both redact (service.redaction): secrets and URL credentials never appear, session ids
in paths appear as their tags. A JSON line has `time` (UTC, ISO 8601), `level`,
`logger`, `request_id`, `process` and `message`, plus `exception` when there is one;
the front door's access lines add `method`, `path`, `status`, `duration_ms`, `key`, and
`model` and `version` when the request ran on a model version.

`logging_config` is the dictConfig that `seqcast serve` applies in its own process and
hands to uvicorn, which applies it in every worker process as it starts, so workers log
the same way.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from service.redaction import LOG_FORMAT, RedactingFormatter, install_log_context, redact

LogFormat = Literal["text", "json"]

# Fields the front door's access log adds to its records (service.api.front_door.AccessLog).
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "key", "model", "version")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, every string redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "process": record.process,
            "message": redact(record.getMessage()),
        }
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


def formatter(log_format: LogFormat = "text") -> logging.Formatter:
    """The formatter for this format; also what logging_config's entries call."""
    install_log_context()  # every record carries its request id and a redacted message
    return JsonFormatter() if log_format == "json" else RedactingFormatter(LOG_FORMAT)


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A logging.config.dictConfig: every record, uvicorn's included, to stderr in this format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"seqcast": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "seqcast",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
