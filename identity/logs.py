"""Structured logs for every process: one JSON object a line (or a plain line, LOG_FORMAT),
personal data never in clear. The web (api.observability, which adds the request id), the
Celery workers (worker.app, through Celery's setup_logging signal), the relay and the
stream bridge all configure it.

Identifiers are personal data. Three layers keep them out of the logs:

1. no code logs a request's email or phone;
2. the engine hides SQL parameters (``hide_parameters``), so database errors and
   SQL echo carry none;
3. the formatter replaces values by a keyed hash (HMAC-SHA256 under
   ``LOG_HASH_KEY``, e.g. ``email#1f0c9a2b4e6d``) wherever data can land: anything
   email-shaped, anywhere in the line; and any run of seven or more digits (a
   phone number, with or without separators) in the logged arguments, the extra
   fields, the traceback, and any message that was formatted before it was logged.
   The same value gives the same token for one key, so one person's requests can
   still be followed through the logs without the logs holding who it is.

What is text written in code keeps its digits: a format string (a record logged
with arguments), and any message of this project's loggers (their logging calls
pass a literal, which tests/api/test_logging.py checks), so an order number or a
count written there stays readable. A third-party message logged without
arguments may have been formatted from request data first (gunicorn's
``Invalid request from ip=...: Invalid HTTP request line: '...'``): it is redacted
whole. A few known templates log arguments that are not personal data and must
be read (the development server's debugger PIN): they are listed in
``_NOT_PERSONAL``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from identity.settings import Settings

# Mirrors identity.normalize: the characters an accepted email may hold on each side of "@".
_EMAIL = re.compile(r"[^\s\x00-\x1f\x7f<>\[\](),;:\\\"@]+@[^\s\x00-\x1f\x7f<>\[\](),;:\\\"@]+")
# Seven or more digits, optionally + first and separators between: every real phone number.
_PHONE = re.compile(r"(?<![\w#])\+?\d(?:[\s\-.()]{0,2}\d){6,}(?!\w)")

# The loggers of this project's code: their messages are literals.
_OWN_LOGGERS = ("api", "identity", "worker")
# (logger, format string) of records whose arguments are not personal data and must be
# read as they are: werkzeug's debugger PIN (``make dev``), e.g. "123-456-789", which is
# phone-shaped. Only that exact template of that logger: werkzeug's request lines carry
# query strings, and stay redacted.
_NOT_PERSONAL = frozenset(
    {
        ("werkzeug", " * Debugger PIN: %s"),
        ("werkzeug", " * Debugger pin code: %s"),
    }
)

# LogRecord attributes that are not "extra" fields.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class Redactor:
    """Replaces emails and phone numbers in text by keyed hashes."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
        return f"{kind}#{digest[:12]}"

    def redact(self, text: str) -> str:
        """Emails and phone-shaped digit runs: for text that may hold data."""
        return _PHONE.sub(
            lambda m: self.token("phone", re.sub(r"[^\d+]", "", m.group())),
            self.redact_emails(text),
        )

    def redact_emails(self, text: str) -> str:
        """Emails only: for text written in code, whose digits are not a phone."""
        if "@" not in text:
            return text
        return _EMAIL.sub(lambda m: self.token("email", m.group()), text)

    def redact_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        return _redact_arg(self, value)


def redacted_message(r: Redactor, record: logging.LogRecord) -> str:
    """The record's message: the text written in code as it is, each argument redacted.

    Redacting the arguments rather than the formatted line keeps numbers that only
    look like a phone once printed side by side (``127.0.0.1:8000 (4711)``) intact,
    and the format string's own digits (an order number, a count) readable. Emails
    are redacted everywhere: their shape is unambiguous. A format that refuses the
    redacted arguments falls back to redacting the whole line.
    """
    args, written = record.args, isinstance(record.msg, str)
    if written and (record.name, record.msg) in _NOT_PERSONAL:
        return r.redact_emails(record.getMessage())
    if args and written:
        try:
            if isinstance(args, dict):
                safe: Any = {k: _redact_arg(r, v) for k, v in args.items()}
            else:
                safe = tuple(_redact_arg(r, v) for v in args)
            return str(r.redact_emails(str(record.msg)) % safe)
        except (TypeError, ValueError, KeyError):
            pass
    elif not args and written and _is_own_logger(record.name):
        return r.redact_emails(record.msg)
    return r.redact(record.getMessage())


def _is_own_logger(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in _OWN_LOGGERS)


def _redact_arg(r: Redactor, value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        # A phone given as a number: redact it when it has the digits of one.
        return value if abs(value) < 10**6 else r.redact(str(value))
    return r.redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, extras, exc."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor(os.urandom(32))

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redacted_message(r, record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = r.redact_value(value)
        if entry.get("request_id") is None:
            entry.pop("request_id", None)
        if record.exc_info:
            entry["exc"] = r.redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            entry["exc"] = r.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = r.redact(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line, redacted the same way."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self.redactor = redactor or Redactor(os.urandom(32))

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = None
        # Redact the message and the traceback, not the whole line: the timestamp
        # prefix would otherwise read as a phone number.
        r = self.redactor
        saved = record.msg, record.args, record.exc_text
        record.msg, record.args = redacted_message(r, record), None
        if record.exc_info:
            record.exc_text = r.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = r.redact(record.exc_text)
        try:
            line = super().format(record)
        finally:
            record.msg, record.args, record.exc_text = saved
        if record.stack_info:
            line = line.replace(record.stack_info, r.redact(record.stack_info))
        return line


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (test capture swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def make_formatter(settings: Settings) -> logging.Formatter:
    # Without LOG_HASH_KEY each process hashes under its own random key: tokens
    # still group one process's lines, and nothing outside it can reverse them.
    key = settings.log_hash_key.get().encode() or os.urandom(32)
    redactor = Redactor(key)
    if settings.log_format == "text":
        return TextFormatter(redactor)
    return JsonFormatter(redactor)


def configure_logging(settings: Settings, *filters: logging.Filter) -> None:
    """Route the root logger to one stderr handler with the configured format and level.

    Idempotent: a second call replaces the handler it installed before.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_identity_handler", False):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler._identity_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(make_formatter(settings))
    for one in filters:
        handler.addFilter(one)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
