"""structlog set-up: key=value on a terminal, JSON lines otherwise, secrets scrubbed.

structlog is imported at the first event, not at start: it brings asyncio with it, about
80 ms of a one-shot command's start-up (``report``, ``check``) that logs little or nothing.
Modules take their logger from :func:`get_logger`, which resolves structlog's on each call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

_secrets: set[str] = set()
REDACTED = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every later log event, whatever field it hides in."""
    if value and len(value) >= 8:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif not isinstance(value, (int, float, bool, type(None))):
            text = str(value)
            if redact(text) != text:
                event[key] = redact(text)
    return event


_pending: dict[str, Any] | None = None  # configure()'s settings, applied at the first event
# the level configured, by logging's numbers: an event below it loads nothing (a report that says
# nothing at info level never imports structlog, 0.09 s)
_level = logging.INFO
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL}


def configure(level: str = "info", fmt: str = "auto", stream: Any = None, secrets: Iterable[str] = ()) -> None:
    """Configure structlog once per process; ``fmt`` is auto, json or console.

    Applied at once when structlog is already loaded, else at the first event.
    """
    global _pending, _level
    for s in secrets:
        register_secret(s)
    _pending = {"level": level, "fmt": fmt, "stream": stream or sys.stderr}
    _level = _LEVELS[level.lower()]
    if "structlog" in sys.modules:
        _apply()


def _apply() -> None:
    global _pending
    settings, _pending = _pending, None
    if settings is None:
        return
    import structlog

    stream, fmt = settings["stream"], settings["fmt"]
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings["level"].upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class _Logger:
    """A module's logger: structlog's, looked up (and structlog loaded and configured) at each event."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if _LEVELS.get(name, _level) < _level:
            return _ignore
        if _pending is not None:
            _apply()
        import structlog

        return getattr(structlog.get_logger(), name)


def _ignore(*_args: Any, **_kw: Any) -> None:
    """An event below the configured level."""


def get_logger() -> Any:
    """The logger a module keeps in ``log``: ``log.info("event", key=value)`` as with structlog."""
    return _Logger()
