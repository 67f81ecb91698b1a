"""Reading one YAML mapping with its key path: the helpers every section loader shares.

A configuration record declares its YAML keys once, on its fields (`key(...)`: the key's name,
its parser, its default and the line of the configuration reference). `read_record` reads a
section into the record from that; `reference_rows` writes the reference table's rows from it;
`key_paths` lists the keys (tests/test_public_surface.py). Each provider kind (`providers/`) reads
its own `provider:` section with the same `Section`, so a kind's fields and defaults are written
once, in its module. Problems are collected with their key path (`provider.user_pool_id:
required ...`), never raised one by one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Key",
    "Section",
    "boolean",
    "cookie_name",
    "duration_text",
    "http_url",
    "is_http_url",
    "key",
    "key_paths",
    "kind_of",
    "member_of",
    "nonempty_string",
    "one_of",
    "parse_duration",
    "positive_duration",
    "positive_int",
    "read_record",
    "reference_rows",
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


E = TypeVar("E", bound=StrEnum)


def member_of(vocabulary: type[E]) -> Callable[[Any], E]:
    """One of a vocabulary's words (cookieguard.vocabulary), read as its member."""
    check = one_of(*vocabulary)

    def parse(value: Any) -> E:
        return vocabulary(check(value))

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


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024 * 1024}


def size(value: Any) -> int:
    """A size in bytes: a positive integer, or a number with KB or MB (binary: 8KB is 8192)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|)\s*", str(value), re.IGNORECASE)
    parsed = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]) if m else 0
    if parsed <= 0:
        raise ValueError(f"must be a size such as 8KB or 1MB, got {value!r}")
    return parsed


def size_text(value: int) -> str:
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Keys declared on the records' fields
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    """One YAML key of a record: `name` in the YAML, how its value is read (`parse`, or `record`
    for a nested section), and the configuration reference's line: `meaning`, and `shown` for
    the default when the field's value does not say it (`required`, a layout's own default)."""

    name: str
    meaning: str
    parse: Callable[[Any], Any] | None = None
    record: type | None = None
    shown: str | None = None
    show: Callable[[Any], str] | None = None  # how the default reads, e.g. 300.0 -> `5m`
    many: bool = False  # a list of such sections (`routes[]`)


def key(
    name: str,
    parse: Callable[[Any], Any],
    meaning: str,
    *,
    default: Any = dataclasses.MISSING,
    shown: str | None = None,
    show: Callable[[Any], str] | None = None,
    repr: bool = True,
) -> Any:
    """A record field read from the YAML key `name` (the field's default is the key's)."""
    return dataclasses.field(
        default=default, repr=repr, metadata={"yaml": Key(name, meaning, parse, shown=shown, show=show)}
    )


def section_key(
    name: str,
    record: type,
    meaning: str = "",
    *,
    shown: str | None = None,
    required: bool = False,
    many: bool = False,
) -> Any:
    """A record field that is a nested section (or with `many`, a list of them), read into
    `record`, its defaults when absent. With a `meaning` the reference documents it as one key."""
    metadata = {"yaml": Key(name, meaning, record=record, shown=shown, many=many)}
    if required or many:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default_factory=record, metadata=metadata)


def yaml_keys(record: type) -> Iterator[tuple[dataclasses.Field[Any], Key]]:
    for f in dataclasses.fields(record):
        declared = f.metadata.get("yaml")
        if declared is not None:
            yield f, declared


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


R = TypeVar("R")


def read_record(s: Section, record: type[R], defaults: R | None = None, /, **given: Any) -> R:
    """Read the section `s` into `record`: every key declared on its fields, parsed, its default
    the field's (or `defaults`' when given: a layout's own); nested sections read alike. Fields
    passed in `given` are not read. Unknown keys are problems (`finish`)."""
    values: dict[str, Any] = {}
    for f, declared in yaml_keys(record):
        if f.name in given:
            s.seen.add(declared.name)
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        if declared.many:
            raise TypeError(f"{record.__name__}.{f.name}: a list of sections is read by its caller")
        if declared.record is not None:
            values[f.name] = read_record(s.section(declared.name), declared.record)
        else:
            assert declared.parse is not None
            values[f.name] = s.get(declared.name, declared.parse, default)
    s.finish()
    return record(**values, **given)


def key_paths(record: type, prefix: str = "") -> Iterator[str]:
    """Every YAML key path a record reads: `refresh.before_expiry`, `cookies.attributes.path`."""
    for _, declared in yaml_keys(record):
        path = f"{prefix}{declared.name}{'[]' if declared.many else ''}"
        if declared.record is not None and not declared.meaning:
            yield from key_paths(declared.record, path + ".")
        else:
            yield path


def reference_rows(record: type, prefix: str = "") -> Iterator[str]:
    """The configuration reference's table rows for a record: `| key | default | meaning |`."""
    for f, declared in yaml_keys(record):
        path = f"{prefix}{declared.name}{'[]' if declared.many else ''}"
        if declared.record is not None and not declared.meaning:
            yield from reference_rows(declared.record, path + ".")
            continue
        shown = declared.shown
        if shown is None:
            value = _default(f)
            shown = "none" if value is None else f"`{(declared.show or _shown)(value)}`"
        yield f"| `{path}` | {shown} | {declared.meaning} |"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def duration_text(seconds: float) -> str:
    """A duration as the YAML would write it: the largest unit that divides it at least twice
    (300.0 -> `5m`, 31536000.0 -> `365d`), else seconds (60.0 -> `60s`, 75.0 -> `75s`)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= 2 * size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds >= 1 or seconds == 0 else f"{round(seconds * 1000)}ms"
