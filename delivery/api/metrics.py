"""Process metrics in the Prometheus text exposition format (version 0.0.4).

A small registry of counters and gauges that any component fills and that `GET /metrics`
renders. Components create their own metrics once, at start, and keep the handle:

    requests = metrics.counter("delivery_api_requests_total", "API requests.", ("path", "status"))
    requests.inc(path="/api", status="200")

Gauges whose value is only known at scrape time (queue depth, pool size) register a callback
with `MetricsRegistry.gauge_callback`; the callback runs on every scrape and must be cheap.

Outcomes:
    counter() / gauge() return the metric; registering a name twice, a malformed name or a
    label set that does not match the declared label names raises ValueError (a programming
    error, found by the first test that touches it).

Security:
    Label values come from the caller. Never label with raw client input: cardinality is
    memory. Callers map untrusted values onto a closed set first (see api/app.py).

Standards: Prometheus text exposition format 0.0.4.
Limits: no histograms or summaries yet; counters and gauges cover what components need so far.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "MetricsRegistry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type Prometheus expects for the text format."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]


def _escape_label(value: str) -> str:
    """Escape a label value for the text format.

    >>> _escape_label('a"b\\\\c\\nd')
    'a\\\\"b\\\\\\\\c\\\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    """Render a sample value as Prometheus expects (integers without a decimal point).

    >>> _format_value(3.0), _format_value(0.5), _format_value(math.inf)
    ('3', '0.5', '+Inf')
    """
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _sample_line(name: str, labelnames: LabelValues, values: LabelValues, value: float) -> str:
    if not labelnames:
        return f"{name} {_format_value(value)}"
    pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(labelnames, values, strict=True))
    return f"{name}{{{pairs}}} {_format_value(value)}"


@dataclass(slots=True)
class _Metric:
    name: str
    help: str
    labelnames: LabelValues
    _values: dict[LabelValues, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    kind = "untyped"

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[name]) for name in self.labelnames)

    def value(self, **labels: str) -> float:
        """The current value for one label set (0 when never touched)."""
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        """The HELP, TYPE and sample lines of this metric."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            samples = sorted(self._values.items())
        lines.extend(_sample_line(self.name, self.labelnames, k, v) for k, v in samples)
        return lines


class Counter(_Metric):
    """A monotonically increasing count (requests, messages, errors)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the count for this label set."""
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    """A value that goes up and down (in-flight requests, open connections)."""

    kind = "gauge"

    def set(self, value: float, /, **labels: str) -> None:
        """Set the value for this label set."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (may be negative) to the value for this label set."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, /, **labels: str) -> None:
        """Subtract ``amount`` from the value for this label set."""
        self.inc(-amount, **labels)


@dataclass(frozen=True, slots=True)
class _CallbackGauge:
    name: str
    help: str
    labelnames: LabelValues
    read: Callable[[], Iterable[tuple[LabelValues, float]]]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        samples = sorted(self.read())
        lines.extend(_sample_line(self.name, self.labelnames, k, v) for k, v in samples)
        return lines


class MetricsRegistry:
    """Every metric of the process, rendered together by `GET /metrics`."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric | _CallbackGauge] = {}

    def _check(self, name: str, labelnames: Iterable[str]) -> LabelValues:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        if name in self._metrics:
            raise ValueError(f"metric {name!r} is already registered")
        names = tuple(labelnames)
        for label in names:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        return names

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        """Register and return a counter; by convention its name ends in ``_total``."""
        metric = Counter(name, help, self._check(name, labelnames))
        self._metrics[name] = metric
        return metric

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        """Register and return a gauge that the owner sets."""
        metric = Gauge(name, help, self._check(name, labelnames))
        self._metrics[name] = metric
        return metric

    def gauge_callback(
        self,
        name: str,
        help: str,
        read: Callable[[], Iterable[tuple[LabelValues, float]]],
        labelnames: Iterable[str] = (),
    ) -> None:
        """Register a gauge read at scrape time: ``read()`` yields (label values, value)."""
        self._metrics[name] = _CallbackGauge(name, help, self._check(name, labelnames), read)

    def render(self) -> str:
        """Every metric in the text exposition format, ending with a newline."""
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "\n".join(lines) + "\n"
