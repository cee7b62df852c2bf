"""Secret scrubbing for everything the connector prints or writes.

Values of settings declared secret, credentials read from secret backends and tokens fetched at
run time are registered here; every log record (``logsetup`` scrubs them where they are made),
uncaught traceback, user-facing error, ``--show-mappings`` line and ``--save-data`` file passes
through :func:`scrub`.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "********"
_MIN_LEN = 4  # shorter values would mask ordinary words ("x", "25")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def add_secret(value: Any) -> None:
    """Register a secret value (ignored when empty or too short to be a credential)."""
    global _pattern
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < _MIN_LEN or value in _secrets:
        return
    with _lock:
        _secrets.add(value)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def has_secrets() -> bool:
    return _pattern is not None


def is_secret(value: Any) -> bool:
    return isinstance(value, str) and value.strip() in _secrets


def scrub(text: str) -> str:
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def scrub_obj(obj: Any) -> Any:
    """Scrub every string inside a JSON-like structure (for saved data and shown mappings)."""
    if _pattern is None:
        return obj
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: scrub_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_obj(v) for v in obj]
    return obj


def clear() -> None:
    """Forget all secrets (tests run several configurations in one process)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


class RedactingFilter(logging.Filter):
    """Logging filter that renders the message and scrubs secrets out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is not None:
            message = record.getMessage()
            record.msg = scrub(message)
            record.args = None
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
        return True
