"""What never reaches a log line or an answer as it is: secrets, session ids, long input.

One redaction for every log record: `install_log_context()` makes each record carry
the request id of the request that logged it and redacts its message, whichever
logger or handler it goes to (uvicorn's, the root's, a test's).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import threading
from typing import Any

# The request being handled, for log lines ("-" outside any request).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# user:password@ in a URL (redis://:secret@host, https://user:pw@host).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_re: re.Pattern[str] | None = None


def add_secret(secret: str) -> None:
    """Redact this exact string from every log line and error body from now on."""
    global _secrets_re
    if len(secret) < 4:  # too short to search for without mangling ordinary text
        return
    with _secrets_lock:
        _secrets.add(secret)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """`text` with URL credentials and registered secrets replaced by ***."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    pattern = _secrets_re
    return pattern.sub("***", text) if pattern is not None else text


def session_tag(session_id: str) -> str:
    """A short, stable stand-in for a session id in logs: ids are bearer secrets."""
    return "~" + hashlib.sha256(session_id.encode()).hexdigest()[:10]


class _RedactedRecord(logging.LogRecord):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_id = request_id_var.get()

    def getMessage(self) -> str:
        return redact(super().getMessage())


def install_log_context() -> None:
    """Every log record from now on carries `request_id` and a redacted message."""
    if logging.getLogRecordFactory() is not _RedactedRecord:
        logging.setLogRecordFactory(_RedactedRecord)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):  # a record made before install_log_context
            record.request_id = "-"
        return redact(super().format(record))


_SESSION_IN_PATH = re.compile(r"(/sessions/)([^/?#]+)")


def redacted_path(path: str) -> str:
    """A request path fit for a log line: session ids as their tags."""
    return _SESSION_IN_PATH.sub(lambda m: m.group(1) + session_tag(m.group(2)), path)
