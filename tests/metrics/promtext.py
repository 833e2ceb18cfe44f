"""A strict reader of the Prometheus text format 0.0.4, for tests: what a scraper would see.

`parse(text)` checks what Prometheus relies on and raises AssertionError naming the line
otherwise: every sample belongs to a family announced by HELP and TYPE lines before it, a
family is announced once, label values are properly escaped, values are numbers, no series
appears twice, and each histogram series has increasing ``le`` bounds ending at ``+Inf`` with
cumulative counts whose ``+Inf`` count equals ``_count``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["Exposition", "Family", "parse"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

Labels = frozenset[tuple[str, str]]


@dataclass
class Family:
    """One metric family: its HELP, TYPE and samples (sample name, labels) -> value."""

    name: str
    help: str
    kind: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


@dataclass
class Exposition:
    """A parsed /metrics answer."""

    families: dict[str, Family]

    def value(self, name: str, /, **labels: str) -> float:
        """The value of one sample; KeyError when it is not there."""
        family = self.families[_family_of(name, self.families)]
        return family.samples[(name, frozenset(labels.items()))]

    def series(self, name: str, /) -> dict[Labels, float]:
        """Every sample called ``name``, by label set."""
        family = self.families[_family_of(name, self.families)]
        return {
            labels: value for (sample, labels), value in family.samples.items() if sample == name
        }


def _family_of(sample: str, families: dict[str, Family]) -> str:
    if sample in families:
        return sample
    for suffix in _HISTOGRAM_SUFFIXES:
        base = sample.removesuffix(suffix)
        if base != sample and families.get(base, Family("", "")).kind == "histogram":
            return base
    raise KeyError(sample)


def _labels(text: str, line: str) -> Labels:
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        assert match is not None, f"bad labels at {position}: {line!r}"
        value = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], match.group(2))
        pairs.append((match.group(1), value))
        position = match.end()
        if position < len(text):
            assert text[position] == ",", f"expected ',' at {position}: {line!r}"
            position += 1
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a label given twice: {line!r}"
    return frozenset(pairs)


def _number(text: str, line: str) -> float:
    assert re.fullmatch(r"[+-]Inf|NaN|[-+]?[0-9.eE+-]+", text), f"bad value: {line!r}"
    return float(text.replace("Inf", "inf"))


def parse(text: str, /) -> Exposition:
    """Read ``text`` as Prometheus would, checking it (see the module docstring)."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in families, f"{name} announced twice"
            current = families[name] = Family(name, help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert current is not None and current.name == name, f"TYPE without HELP: {line!r}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            current.kind = kind
        else:
            match = _SAMPLE.match(line)
            assert match is not None, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            assert current is not None, f"a sample before any HELP: {line!r}"
            assert _family_of(name, {current.name: current}) == current.name, (
                f"{name} outside its family {current.name}"
            )
            key = (name, _labels(label_text or "", line))
            assert key not in current.samples, f"a series given twice: {line!r}"
            current.samples[key] = _number(value, line)
    for family in families.values():
        assert family.kind, f"{family.name} has no TYPE"
        if family.kind == "histogram":
            _check_histogram(family)
    return Exposition(families)


def _check_histogram(family: Family) -> None:
    name = family.name
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for (sample, labels), value in family.samples.items():
        if sample == f"{name}_bucket":
            le = dict(labels)["le"]
            rest = frozenset(pair for pair in labels if pair[0] != "le")
            buckets.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
    for labels, found in buckets.items():
        bounds = [bound for bound, _ in found]
        counts = [count for _, count in found]
        assert bounds == sorted(bounds) and math.isinf(bounds[-1]), f"{name} {set(labels)}"
        assert counts == sorted(counts), f"{name} {set(labels)}: buckets are not cumulative"
        total = family.samples[(f"{name}_count", labels)]
        assert counts[-1] == total, f"{name} {set(labels)}: +Inf bucket {counts[-1]} != {total}"
        assert (f"{name}_sum", labels) in family.samples, f"{name} {set(labels)}: no _sum"
