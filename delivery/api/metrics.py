"""Process metrics in the Prometheus text exposition format (version 0.0.4).

A small registry of counters, gauges and histograms that any component fills and that
`GET /metrics` renders. Components create their own metrics once, at start, and keep the
handle:

    requests = metrics.counter("delivery_api_requests_total", "API requests.", ("path", "status"))
    requests.inc(path="/api", status="200")

A hot path binds its label values once and keeps the child, so that counting costs one dict
update and formats nothing: ``ok = requests.labels(path="/api", status="200")``, then
``ok.inc()``. A bound child's series is shown from the start, at 0 (Prometheus' advice for
label values known in advance: a series that appears only on its first event hides the
increase from 0 to 1 from ``rate()``).

Values only known at scrape time are read by callbacks: `gauge_callback` / `counter_callback`
(cheap synchronous reads of in-memory state, e.g. a cache's hit count) and
`async_gauge_callback` (a store query, e.g. the queue's size), run by `scrape` before it
renders, all at once, within `METRICS_COLLECT_TIMEOUT_S`.

Outcomes:
    counter() / gauge() / histogram() / *_callback() return or register the metric;
    registering a name twice, a malformed name or a label set that does not match the
    declared label names raises ValueError (a programming error, found by the first test
    that touches it). An async callback that fails or times out leaves its metric without
    samples for that scrape (never stale values), is logged, and is counted in
    ``delivery_metrics_collect_errors_total{metric}``; the other metrics are still served.

Security:
    Label values come from the caller. Never label with raw client input: cardinality is
    memory. Callers map untrusted values onto a closed set first (see api/app.py).

Standards: Prometheus text exposition format 0.0.4 (HELP, TYPE, samples; histograms as
cumulative ``_bucket`` series with an ``le`` label ending at ``+Inf``, then ``_sum`` and
``_count``).
Limits: no summaries; no timestamps on samples (the scrape time is the sample time).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "COLLECT_ERRORS",
    "CONTENT_TYPE",
    "METRICS_COLLECT_TIMEOUT_S",
    "Counter",
    "CounterChild",
    "Gauge",
    "Histogram",
    "HistogramChild",
    "MetricsRegistry",
]

log = logging.getLogger("delivery.api.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type Prometheus expects for the text format."""

METRICS_COLLECT_TIMEOUT_S = 5.0
"""Longest wait for the async callbacks of one scrape (a store query each): half of
Prometheus' default scrape timeout (10 s), so that a store that hangs costs its own metric,
not the whole scrape and every other metric with it."""

COLLECT_ERRORS = "delivery_metrics_collect_errors_total"
"""The counter of async callbacks that failed, by metric name (registered with the first)."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]
Samples = Iterable[tuple[LabelValues, float]]
Kind = Literal["counter", "gauge"]


def _escape_label(value: str) -> str:
    """Escape a label value for the text format.

    >>> _escape_label('a"b\\\\c\\nd')
    'a\\\\"b\\\\\\\\c\\\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    """Escape a HELP text: backslash and line feed only (format 0.0.4).

    >>> _escape_help('a "b" \\\\ c\\nd')
    'a "b" \\\\\\\\ c\\\\nd'
    """
    return text.replace("\\", "\\\\").replace("\n", "\\n")


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


def _labels_text(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return f"{{{text}}}" if text else ""


def _sample_line(name: str, labelnames: LabelValues, values: LabelValues, value: float) -> str:
    labels = _labels_text(zip(labelnames, values, strict=True))
    return f"{name}{labels} {_format_value(value)}"


def _header(name: str, help: str, kind: str) -> list[str]:
    return [f"# HELP {name} {_escape_help(help)}", f"# TYPE {name} {kind}"]


def _label_key(name: str, labelnames: LabelValues, labels: Mapping[str, str]) -> LabelValues:
    """The label values of ``labels`` in declaration order; ValueError when they differ."""
    if set(labels) != set(labelnames):
        raise ValueError(f"{name} takes labels {list(labelnames)}, got {sorted(labels)}")
    return tuple(str(labels[label]) for label in labelnames)


@dataclass(slots=True)
class _Metric:
    name: str
    help: str
    labelnames: LabelValues
    _values: dict[LabelValues, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    kind = "untyped"

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        return _label_key(self.name, self.labelnames, labels)

    def value(self, **labels: str) -> float:
        """The current value for one label set (0 when never touched)."""
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        """The HELP, TYPE and sample lines of this metric."""
        lines = _header(self.name, self.help, self.kind)
        with self._lock:
            samples = sorted(self._values.items())
        lines.extend(_sample_line(self.name, self.labelnames, k, v) for k, v in samples)
        return lines


class CounterChild:
    """One label set of a `Counter`, bound once (`Counter.labels`): ``inc`` formats nothing."""

    __slots__ = ("_key", "_lock", "_values")

    def __init__(self, counter: Counter, key: LabelValues, /) -> None:
        self._values, self._lock, self._key = counter._values, counter._lock, key
        with self._lock:
            self._values.setdefault(key, 0.0)

    def inc(self, amount: float = 1.0, /) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        with self._lock:
            self._values[self._key] += amount


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

    def labels(self, **labels: str) -> CounterChild:
        """The child of one label set, shown from now on (at 0 until incremented)."""
        return CounterChild(self, self._key(labels))


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


class _Series:
    """One label set of a histogram: a count per bucket (not cumulative), the sum, the count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int, /) -> None:
        self.buckets = [0] * size
        self.sum = 0.0
        self.count = 0


class HistogramChild:
    """One label set of a `Histogram`, bound once (`Histogram.labels`)."""

    __slots__ = ("_bounds", "_lock", "_series")

    def __init__(self, histogram: Histogram, key: LabelValues, /) -> None:
        self._bounds, self._lock = histogram.bounds, histogram._lock
        with self._lock:
            self._series = histogram._series.setdefault(key, _Series(len(self._bounds) + 1))

    def observe(self, value: float, /) -> None:
        """Count one observation (the last bucket is ``+Inf``)."""
        # bisect_left: the first bound >= value, as ``le`` means "less than or equal".
        index = bisect.bisect_left(self._bounds, value)
        series = self._series
        with self._lock:
            series.buckets[index] += 1
            series.sum += value
            series.count += 1


class Histogram:
    """Observations (durations, sizes) counted in cumulative buckets, with their sum.

    :param bounds: the buckets' upper bounds, increasing; ``+Inf`` is added.
    """

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: LabelValues, bounds: Sequence[float]
    ) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)) or math.isinf(bounds[-1]):
            raise ValueError(f"{name}: bucket bounds must be finite, distinct and increasing")
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is the bucket label of a histogram")
        self.name, self.help, self.labelnames = name, help, labelnames
        self.bounds = tuple(float(bound) for bound in bounds)
        self._series: dict[LabelValues, _Series] = {}
        self._lock = threading.Lock()

    def labels(self, **labels: str) -> HistogramChild:
        """The child of one label set, shown from now on (empty buckets until observed)."""
        return HistogramChild(self, _label_key(self.name, self.labelnames, labels))

    def observe(self, value: float, /, **labels: str) -> None:
        """Count one observation for this label set."""
        self.labels(**labels).observe(value)

    def count(self, **labels: str) -> int:
        """Observations of one label set so far."""
        series = self._series.get(_label_key(self.name, self.labelnames, labels))
        return series.count if series is not None else 0

    def render(self) -> list[str]:
        """The HELP, TYPE and ``_bucket`` / ``_sum`` / ``_count`` lines of this histogram."""
        lines = _header(self.name, self.help, self.kind)
        with self._lock:
            samples = sorted(
                (key, list(series.buckets), series.sum, series.count)
                for key, series in self._series.items()
            )
        bounds = [*(_format_value(bound) for bound in self.bounds), "+Inf"]
        for key, buckets, total, count in samples:
            pairs = list(zip(self.labelnames, key, strict=True))
            cumulative = 0
            for bound, in_bucket in zip(bounds, buckets, strict=True):
                cumulative += in_bucket
                labels = _labels_text([*pairs, ("le", bound)])
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            lines.append(f"{self.name}_sum{_labels_text(pairs)} {_format_value(total)}")
            lines.append(f"{self.name}_count{_labels_text(pairs)} {count}")
        return lines


@dataclass(frozen=True, slots=True)
class _Callback:
    """A counter or gauge whose samples ``read()`` yields at scrape time."""

    name: str
    help: str
    kind: Kind
    labelnames: LabelValues
    read: Callable[[], Samples]

    def render(self) -> list[str]:
        lines = _header(self.name, self.help, self.kind)
        samples = sorted(self.read())
        lines.extend(_sample_line(self.name, self.labelnames, k, v) for k, v in samples)
        return lines


@dataclass(slots=True)
class _AsyncCallback:
    """A gauge whose samples ``collect()`` returns, awaited by `MetricsRegistry.scrape`."""

    name: str
    help: str
    labelnames: LabelValues
    collect: Callable[[], Awaitable[Samples]]
    samples: list[tuple[LabelValues, float]] = field(default_factory=list)
    """What the last scrape collected; empty after a failure."""

    def render(self) -> list[str]:
        lines = _header(self.name, self.help, "gauge")
        lines.extend(_sample_line(self.name, self.labelnames, k, v) for k, v in self.samples)
        return lines


class MetricsRegistry:
    """Every metric of the process, rendered together by `GET /metrics`."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric | Histogram | _Callback | _AsyncCallback] = {}
        self._collect_errors: Counter | None = None

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

    def histogram(
        self, name: str, help: str, labelnames: Iterable[str] = (), *, bounds: Sequence[float]
    ) -> Histogram:
        """Register and return a histogram with these bucket upper bounds (``+Inf`` added).

        By convention its name ends in the unit: ``_seconds``, ``_bytes``.
        """
        metric = Histogram(name, help, self._check(name, labelnames), bounds)
        self._metrics[name] = metric
        return metric

    def gauge_callback(
        self,
        name: str,
        help: str,
        read: Callable[[], Samples],
        labelnames: Iterable[str] = (),
    ) -> None:
        """Register a gauge read at scrape time: ``read()`` yields (label values, value)."""
        names = self._check(name, labelnames)
        self._metrics[name] = _Callback(name, help, "gauge", names, read)

    def counter_callback(
        self,
        name: str,
        help: str,
        read: Callable[[], Samples],
        labelnames: Iterable[str] = (),
    ) -> None:
        """Register a counter kept elsewhere (a cache's hit count), read at scrape time."""
        names = self._check(name, labelnames)
        self._metrics[name] = _Callback(name, help, "counter", names, read)

    def async_gauge_callback(
        self,
        name: str,
        help: str,
        collect: Callable[[], Awaitable[Samples]],
        labelnames: Iterable[str] = (),
    ) -> None:
        """Register a gauge that a store query answers: awaited by `scrape` (see Outcomes)."""
        names = self._check(name, labelnames)
        if self._collect_errors is None:
            self._collect_errors = self.counter(
                COLLECT_ERRORS,
                "Scrape-time reads that failed or timed out (the metric had no samples).",
                ("metric",),
            )
        self._metrics[name] = _AsyncCallback(name, help, names, collect)

    async def scrape(self) -> str:
        """Await the async callbacks, then `render`: what `GET /metrics` answers."""
        pending = [m for m in self._metrics.values() if isinstance(m, _AsyncCallback)]
        if pending:
            await asyncio.gather(*(self._collect(metric) for metric in pending))
        return self.render()

    async def _collect(self, metric: _AsyncCallback) -> None:
        try:
            async with asyncio.timeout(METRICS_COLLECT_TIMEOUT_S):
                metric.samples = sorted(await metric.collect())
        except Exception as exc:  # one broken read costs its own metric, not the scrape
            metric.samples = []
            log.warning("metric %s not collected: %r", metric.name, exc)
            assert self._collect_errors is not None
            self._collect_errors.inc(metric=metric.name)

    def render(self) -> str:
        """Every metric in the text exposition format, ending with a newline.

        Async callbacks show what the last `scrape` collected.
        """
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "\n".join(lines) + "\n"
