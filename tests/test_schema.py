"""A record's YAML keys are declared once, on its fields (cookieguard.schema.key): that one
declaration reads the key, lists it and writes its reference row."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cookieguard.schema import (
    Section,
    boolean,
    duration_text,
    key,
    key_paths,
    positive_duration,
    read_record,
    reference_rows,
    section_key,
)


@dataclass(frozen=True)
class Inner:
    on: bool = key("on", boolean, "switch it on", default=False)


@dataclass(frozen=True)
class Probe:
    wait_s: float = key("wait", positive_duration, "how long to wait", default=300.0, show=duration_text)
    inner: Inner = section_key("inner", Inner)


def test_a_declared_key_is_read_with_its_default_and_nested_sections() -> None:
    problems: list[str] = []
    assert read_record(Section({"wait": "2m", "inner": {"on": True}}, "probe", problems), Probe) == Probe(
        120.0, Inner(True)
    )
    assert read_record(Section(None, "probe", problems), Probe) == Probe()
    assert problems == []


def test_a_bad_value_and_an_unknown_key_name_their_path() -> None:
    problems: list[str] = []
    read_record(Section({"wait": "soon", "inner": {"on": "yes", "of": 1}, "x": 1}, "probe", problems), Probe)
    assert problems == [
        "probe.wait: not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h, 30d)",
        "probe.inner.on: must be true or false, got 'yes'",
        "probe.inner.of: unknown key",
        "probe.x: unknown key",
    ]


def test_defaults_can_come_from_a_record() -> None:
    """A layout's attribute defaults are its cookie library's, not the field's."""
    problems: list[str] = []
    assert read_record(Section({}, "probe", problems), Inner, Inner(True)) == Inner(True)


def test_the_declaration_lists_and_documents_the_key() -> None:
    assert list(key_paths(Probe, "probe.")) == ["probe.wait", "probe.inner.on"]
    assert list(reference_rows(Probe, "probe.")) == [
        "| `probe.wait` | `5m` | how long to wait |",
        "| `probe.inner.on` | `false` | switch it on |",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (60, "60s"), (75, "75s"), (31536000, "365d"), (7200, "2h"), (0.5, "500ms")],
)
def test_durations_read_as_written(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
