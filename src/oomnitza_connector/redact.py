"""Secret scrubbing for everything the connector prints or writes.

A :class:`Redactor` holds the secret values of one configuration: settings declared secret,
credentials read from secret backends, tokens fetched at run time. The CLI and the webhook server
make one per invocation; ``load_config`` registers the file's secrets with it (``Config.redactor``),
``run_section`` hands it to the source in the ``RunContext``, and each managed run works with a
child of it (``Redactor.child()``: it masks its parent's secrets too, and what it learns, a session
token, a local input, is forgotten with the run).

Which redactor code without a context parameter uses (the HTTP layer's error messages, token
fetches, secret backends, the module functions below) is :func:`current`:

- the redactor of the config being loaded or the run in progress, held in a context variable that
  ``load_config`` and ``run_section`` set for their duration; asyncio tasks and
  ``asyncio.to_thread`` inherit it;
- where none is set (a thread a library started, an exception that reaches the top of the
  program), the redactor logging was set up with (:func:`use_for_logging`, called by
  ``logsetup.setup_logging``): logging is process-wide, so its fallback is too.

Every log record is scrubbed where it is made (``logsetup``) with ``current()``; so are uncaught
tracebacks, user-facing errors, ``--show-mappings`` lines and ``--save-data`` files.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

MASK = "********"
_MIN_LEN = 4  # shorter values would mask ordinary words ("x", "25")


class Redactor:
    """The secrets of one configuration or run, and the scrubbing of text with them."""

    def __init__(self, parent: Redactor | None = None) -> None:
        self.parent = parent
        self._secrets: set[str] = set()
        self._lock = threading.RLock()  # add() may come from several threads
        self._version = 0
        self._pattern: re.Pattern[str] | None = None
        self._pattern_key: tuple[int, ...] = ()

    def child(self) -> Redactor:
        """A redactor that masks this one's secrets and its own (those are not added here)."""
        return Redactor(parent=self)

    def add(self, value: Any) -> None:
        """Register a secret value (ignored when not text, empty or too short to be a credential)."""
        if not isinstance(value, str):
            return
        value = value.strip()
        if len(value) < _MIN_LEN or value in self._secrets:
            return
        with self._lock:
            self._secrets.add(value)
            self._version += 1

    def _key(self) -> tuple[int, ...]:
        own = (id(self), self._version)
        return own + self.parent._key() if self.parent is not None else own

    def secrets(self) -> set[str]:
        """Every value masked: this redactor's and its parents'."""
        with self._lock:
            found = set(self._secrets)
        if self.parent is not None:
            found |= self.parent.secrets()
        return found

    def _compiled(self) -> re.Pattern[str] | None:
        key = self._key()
        if key != self._pattern_key:
            with self._lock:
                # Longest first, so a secret that contains another is masked whole (a parent's
                # included: the pattern covers every level at once).
                ordered = sorted(self.secrets(), key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
                self._pattern_key = key
        return self._pattern

    def has_secrets(self) -> bool:
        return bool(self._secrets) or (self.parent is not None and self.parent.has_secrets())

    def is_secret(self, value: Any) -> bool:
        return isinstance(value, str) and value.strip() in self.secrets()

    def scrub(self, text: str) -> str:
        if not text:
            return text
        pattern = self._compiled()
        return text if pattern is None else pattern.sub(MASK, text)

    def scrub_obj(self, obj: Any) -> Any:
        """Scrub every string inside a JSON-like structure (for saved data and shown mappings)."""
        if self._compiled() is None:
            return obj
        return self._scrub_obj(obj)

    def _scrub_obj(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {k: self._scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self._scrub_obj(v) for v in obj]
        return obj


# -- which redactor is in force ---------------------------------------------------------------------

_current: contextvars.ContextVar[Redactor | None] = contextvars.ContextVar("oomnitza_redactor", default=None)
_for_logging: Redactor | None = None
_fallback_lock = threading.Lock()


def current() -> Redactor:
    """The redactor of the config load or run in progress; else the one logging was set up with."""
    redactor = _current.get()
    if redactor is not None:
        return redactor
    return _logging_redactor()


def in_context() -> Redactor | None:
    """The redactor a config load or run made current here, if any (no fallback)."""
    return _current.get()


def _logging_redactor() -> Redactor:
    global _for_logging
    if _for_logging is None:
        with _fallback_lock:
            if _for_logging is None:
                _for_logging = Redactor()  # nothing was set up (a library use): secrets still count
    return _for_logging


def use_for_logging(redactor: Redactor) -> None:
    """Make ``redactor`` the one used where no run's redactor is current (set up with logging)."""
    global _for_logging
    _for_logging = redactor


@contextlib.contextmanager
def using(redactor: Redactor) -> Iterator[Redactor]:
    """Make ``redactor`` current in this context (and the tasks and threads started from it)."""
    token = _current.set(redactor)
    try:
        yield redactor
    finally:
        _current.reset(token)


def clear() -> None:
    """Forget the logging fallback (tests run several configurations in one process)."""
    global _for_logging
    _for_logging = None


# -- shortcuts to the current redactor (for shared code without a context parameter) ---------------


def add_secret(value: Any) -> None:
    current().add(value)


def has_secrets() -> bool:
    return current().has_secrets()


def is_secret(value: Any) -> bool:
    return current().is_secret(value)


def scrub(text: str) -> str:
    return current().scrub(text)


def scrub_obj(obj: Any) -> Any:
    return current().scrub_obj(obj)


class RedactingFilter(logging.Filter):
    """Logging filter that renders the message and scrubs secrets out of it (with ``redactor``, or
    the current one when none is given)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self.redactor or current()
        if redactor.has_secrets():
            message = record.getMessage()
            record.msg = redactor.scrub(message)
            record.args = None
            if record.exc_text:
                record.exc_text = redactor.scrub(record.exc_text)
        return True
