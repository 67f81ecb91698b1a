"""Reading one YAML mapping with its key path: the helpers every section loader shares.

`config.py` reads the top level with them, and each provider kind (`providers/`) reads its own
`provider:` section, so a kind's fields and defaults are written once, in its module. Problems are
collected with their key path (`provider.user_pool_id: required ...`), never raised one by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Section",
    "boolean",
    "cookie_name",
    "http_url",
    "is_http_url",
    "kind_of",
    "nonempty_string",
    "one_of",
    "parse_duration",
    "positive_duration",
    "positive_int",
    "string",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`500ms`, `30s`, `5m`, `1h`, `30d` (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration (use e.g. 500ms, 30s, 5m, 1h, 30d)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 5m, 1h, 30d)")


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


T = TypeVar("T")


class Section:
    """Reads one mapping of the YAML tree, recording problems under its key path."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error("", f"must be a mapping, got {kind_of(data)}")
            data = {}
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> None:
        where = self.key(name) if name else (self.path or "<root>")
        if any(p.startswith(f"{where}: environment variable") for p in self.problems):
            return  # the unset variable is the mistake to report, not the empty value it left
        self.problems.append(f"{where}: {message}")

    def has(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def get(self, name: str, parse: Callable[[Any], T], default: T) -> T:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        try:
            return parse(self.data[name])
        except (ValueError, TypeError) as exc:
            self.error(name, str(exc))
            return default

    def section(self, name: str) -> Section:
        self.seen.add(name)
        return Section(self.data.get(name), self.key(name), self.problems)

    def finish(self) -> None:
        for name in self.data:
            if name not in self.seen:
                self.error(str(name), "unknown key")


def kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def string(value: Any) -> str:
    if isinstance(value, bool | dict | list):
        raise ValueError(f"must be a string, got {kind_of(value)}")
    return str(value)


def nonempty_string(value: Any) -> str:
    s = string(value)
    if not s:
        raise ValueError("must not be empty")
    return s


_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def cookie_name(value: Any) -> str:
    s = nonempty_string(value)
    if not _TOKEN_CHARS.match(s):
        raise ValueError(f"not a valid cookie name: {s!r}")
    return s


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        s = string(value)
        if s not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {s!r}")
        return s

    return parse


def http_url(value: Any) -> str:
    s = string(value)
    if not is_http_url(s):
        raise ValueError(f"not an http(s) URL: {s!r}")
    return s.rstrip("/") if urlsplit(s).path in ("", "/") else s


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value
