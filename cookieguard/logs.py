"""Structured logging: configured once at start-up, one JSON object per line.

Events are nouns (`token_refresh`, `upstream_error`, `config_loaded`) with fields. A redaction
step runs before rendering: cookieguard holds users' tokens, and no token, secret or full cookie
value may ever reach a log line, whatever a caller passed by mistake.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# Field names whose values are never logged, whatever they hold.
_SECRET_FIELDS = re.compile(
    r"(token|secret|password|cookie|authorization|encryption_key|secret_hash)$", re.IGNORECASE
)
_ALLOWED_FIELDS = frozenset({"refresh_token_rotated", "has_refresh_token"})
# Three base64url segments starting like a JWT header or payload ("eyJ" is base64 of '{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _JWT.sub(_REDACTED, value) if "eyJ" in value else value
    if isinstance(value, dict):
        return {k: _REDACTED if _is_secret_field(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_field(name: Any) -> bool:
    return isinstance(name, str) and name not in _ALLOWED_FIELDS and bool(_SECRET_FIELDS.search(name))


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named fields and anything shaped like a JWT."""
    for key in list(event_dict):
        if _is_secret_field(key):
            event_dict[key] = _REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


# The fields every log line of one request carries (its route; the session once one is refreshed):
# one dict per request, set when the request starts and reset when it ends. A new dict each time,
# so nothing bound during one request can be read by the next, even on the same connection (whose
# requests aiohttp handles in one task, one context). One ContextVar instead of structlog's one per
# key: binding and clearing those walked the whole context on every request.
_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cookieguard_request", default=None
)


def bind_request(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Start a request's log context; hand the token to `end_request` when the request ends."""
    return _REQUEST.set(fields)


def end_request(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _REQUEST.reset(token)


def annotate_request(**fields: Any) -> None:
    """Add fields to the log context of the request in progress (none: nothing to add to)."""
    context = _REQUEST.get()
    if context is not None:
        context.update(fields)


def merge_request(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the request's fields, under whatever the call itself passed."""
    context = _REQUEST.get()
    if context:
        for key, value in context.items():
            event_dict.setdefault(key, value)
    return event_dict


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_access(log: Any, method: str, path: str | None, status: int, started: float) -> None:
    """The `access` line of one request (`logging.access_log`), for the proxy and forward-auth:
    the path without its query, never a header."""
    log.info(
        "access",
        method=method,
        path=path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """The one place structlog is configured. Filtering by level happens before any processing."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            merge_request,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the standard library. aiohttp's server logs a malformed
    # request with the offending header line (a Cookie header full of tokens) in the message:
    # those records are turned into structured events that name the error class only.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").disabled = True
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.client", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StructuredRedactingFilter) for f in logger.filters):
            logger.addFilter(_StructuredRedactingFilter())


class _StructuredRedactingFilter(logging.Filter):
    """Replace a stdlib log record by a structlog event without its message or exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        fields: dict[str, Any] = {"logger": record.name}
        if exc is not None:
            fields["error"] = type(exc).__name__
            status = getattr(exc, "code", None)
            if isinstance(status, int):
                fields["status"] = status
            tb = exc.__traceback__
            frames = []
            while tb is not None:  # where it happened, never what the values were
                frames.append(f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}")
                tb = tb.tb_next
            fields["at"] = frames[-3:]
        else:
            fields["message"] = record.getMessage()  # scrubbed by the redact processor
        event = (
            "bad_request"
            if exc is not None and type(exc).__module__.startswith("aiohttp.http")
            else "internal_error"
        )
        level = "info" if event == "bad_request" else record.levelname.lower()
        if level not in ("debug", "info", "warning", "error"):
            level = "error"
        getattr(get_logger(), level)(event, **fields)
        return False


def get_logger() -> Any:
    return structlog.get_logger("cookieguard")
