"""The metrics registry's text format: histograms, bound children, scrape-time reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from delivery.api import metrics
from delivery.engine import metrics as engine_metrics
from tests.metrics import promtext


def test_histogram_renders_cumulative_buckets_sum_and_count() -> None:
    registry = metrics.MetricsRegistry()
    latency = registry.histogram(
        "demo_seconds", "Latency.\nSecond line \\ too.", ("route",), bounds=(0.1, 1, 2.5)
    )
    fast = latency.labels(route="mx")
    for value in (0.05, 0.1, 0.7, 3.0):  # 0.1 is counted in le="0.1": bounds are inclusive
        fast.observe(value)
    latency.labels(route='re"lay')  # bound, never observed: shown with zero buckets
    assert registry.render().splitlines() == [
        "# HELP demo_seconds Latency.\\nSecond line \\\\ too.",
        "# TYPE demo_seconds histogram",
        'demo_seconds_bucket{route="mx",le="0.1"} 2',
        'demo_seconds_bucket{route="mx",le="1"} 3',
        'demo_seconds_bucket{route="mx",le="2.5"} 3',
        'demo_seconds_bucket{route="mx",le="+Inf"} 4',
        'demo_seconds_sum{route="mx"} 3.85',
        'demo_seconds_count{route="mx"} 4',
        'demo_seconds_bucket{route="re\\"lay",le="0.1"} 0',
        'demo_seconds_bucket{route="re\\"lay",le="1"} 0',
        'demo_seconds_bucket{route="re\\"lay",le="2.5"} 0',
        'demo_seconds_bucket{route="re\\"lay",le="+Inf"} 0',
        'demo_seconds_sum{route="re\\"lay"} 0',
        'demo_seconds_count{route="re\\"lay"} 0',
    ]
    parsed = promtext.parse(registry.render())
    assert parsed.value("demo_seconds_count", route='re"lay') == 0
    assert parsed.families["demo_seconds"].help == "Latency.\\nSecond line \\\\ too."
    assert latency.count(route="mx") == 4


def test_an_unlabelled_histogram_has_only_le() -> None:
    registry = metrics.MetricsRegistry()
    registry.histogram("demo_bytes", "Sizes.", bounds=(1024,)).observe(10)
    assert registry.render().splitlines()[2:] == [
        'demo_bytes_bucket{le="1024"} 1',
        'demo_bytes_bucket{le="+Inf"} 1',
        "demo_bytes_sum 10",
        "demo_bytes_count 1",
    ]


def test_bound_counter_children_show_zero_and_count_with_unbound_calls() -> None:
    registry = metrics.MetricsRegistry()
    counter = registry.counter("demo_total", "Demo.", ("kind",))
    ok = counter.labels(kind="ok")
    counter.labels(kind="bad")
    ok.inc()
    counter.inc(2, kind="ok")
    assert registry.render().splitlines()[2:] == [
        'demo_total{kind="bad"} 0',
        'demo_total{kind="ok"} 3',
    ]
    with pytest.raises(ValueError):
        ok.inc(-1)


@pytest.mark.parametrize(
    "mistake",
    [
        lambda r: r.histogram("h1_seconds", "x", bounds=()),
        lambda r: r.histogram("h2_seconds", "x", bounds=(1, 0.5)),
        lambda r: r.histogram("h3_seconds", "x", bounds=(1, 1)),
        lambda r: r.histogram("h4_seconds", "x", bounds=(1, math.inf)),
        lambda r: r.histogram("h5_seconds", "x", ("le",), bounds=(1,)),
        lambda r: r.histogram("h6_seconds", "x", ("a",), bounds=(1,)).observe(1, b="x"),
        lambda r: r.counter_callback("bad name", "x", list),
        lambda r: r.async_gauge_callback("dup_total", "x", list),
    ],
    ids=[
        "no bounds",
        "decreasing",
        "repeated",
        "+Inf given",
        "le label",
        "wrong labels",
        "bad callback name",
        "duplicate async",
    ],
)
def test_misuse_is_an_error(mistake: Callable[[metrics.MetricsRegistry], Any]) -> None:
    registry = metrics.MetricsRegistry()
    registry.counter("dup_total", "x")
    with pytest.raises(ValueError):
        mistake(registry)


async def test_scrape_reads_async_gauges_and_a_failed_read_costs_only_its_metric(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = metrics.MetricsRegistry()
    registry.counter_callback("demo_hits_total", "Hits.", lambda: [((), 5)])
    sizes = {"remote": 3.0}

    async def queue() -> list[tuple[tuple[str], float]]:
        return [((name,), size) for name, size in sizes.items()]

    async def broken() -> list[tuple[tuple[str], float]]:
        raise OSError("database is locked")

    async def stuck() -> list[tuple[tuple[str], float]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    registry.async_gauge_callback("demo_queue", "Queue.", queue, ("queue",))
    registry.async_gauge_callback("demo_broken", "Broken.", broken, ("queue",))
    registry.async_gauge_callback("demo_stuck", "Stuck.", stuck, ("queue",))
    monkeypatch.setattr(metrics, "METRICS_COLLECT_TIMEOUT_S", 0.05)

    first = promtext.parse(await registry.scrape())
    assert first.value("demo_queue", queue="remote") == 3
    assert first.value("demo_hits_total") == 5
    assert first.families["demo_hits_total"].kind == "counter"
    assert first.series("demo_broken") == {} and first.series("demo_stuck") == {}
    assert first.series(metrics.COLLECT_ERRORS) == {
        frozenset({("metric", "demo_broken")}): 1,
        frozenset({("metric", "demo_stuck")}): 1,
    }
    sizes.clear()  # a queue that emptied is gone at the next scrape, never a stale value
    second = promtext.parse(await registry.scrape())
    assert second.series("demo_queue") == {}
    assert second.value(metrics.COLLECT_ERRORS, metric="demo_broken") == 2


TLS = engine_metrics.tls_authentication
OUTCOMES = [  # (actions of one attempt's recipients, its label)
    (["delivered"], "delivered"),
    (["delivered", "delivered"], "delivered"),
    (["delayed"], "delayed"),
    (["failed", "failed"], "failed"),
    (["delivered", "failed"], "mixed"),
    ([], "delayed"),
]


@pytest.mark.parametrize(("actions", "expected"), OUTCOMES)
def test_attempt_outcome(actions: list[str], expected: str) -> None:
    assert engine_metrics.attempt_outcome(actions) == expected


def test_delivery_metrics_are_shown_at_zero_from_the_start() -> None:
    registry = metrics.MetricsRegistry()
    engine_metrics.DeliveryMetrics(registry)
    parsed = promtext.parse(registry.render())
    assert set(parsed.series("delivery_smtp_sessions_total").values()) == {0}
    assert len(parsed.series("delivery_smtp_sessions_total")) == 5
    assert parsed.value("delivery_outcomes_total", action="failed", last_error="dane") == 0
    assert parsed.value("delivery_attempt_duration_seconds_count", outcome="mixed") == 0
    with pytest.raises(ValueError):
        engine_metrics.DeliveryMetrics(registry)  # one per registry
