"""Structured logging: configured once at start-up, one JSON object per line.

Events are nouns (`token_refresh`, `upstream_error`, `config_loaded`) with fields. A redaction
step runs before rendering: cookieguard holds users' tokens, and no token, secret or full cookie
value may ever reach a log line, whatever a caller passed by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
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


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """The one place structlog is configured. Filtering by level happens before any processing."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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
    # aiohttp and asyncio log through the standard library; route their warnings to stderr
    # in plain text, without request details that could carry cookies.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").disabled = True


def get_logger() -> Any:
    return structlog.get_logger("cookieguard")
