"""Engine fixtures and helpers: registry snapshots built by hand, queued messages as values.

``make_snapshot`` builds the registry snapshot the engine reads, from the first-start objects
plus any given, without a database (for the planner's tables); the integration tests in
tests/engine use a real Registry, queue store and harness lab instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from delivery.registry import defaults
from delivery.registry.snapshot import Snapshot, build_snapshot

__all__ = ["make_snapshot"]


def make_snapshot(
    outbound: Mapping[str, Any] | None = None,
    objects: Iterable[tuple[str, Mapping[str, Any]]] = (),
    *,
    first_start: bool = True,
) -> Snapshot:
    """A snapshot of the first-start objects (unless ``first_start`` is False) plus ``objects``.

    :param outbound: MtaOutboundStrategy properties to set (wire form), e.g.
        ``{"tls": {"else": "'strict'"}}``; the others keep their defaults.
    :param objects: (type name, wire object) pairs, e.g. ``("MtaTlsStrategy", {"name": "x"})``.
    """
    records: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    listed = list(defaults.FIRST_START_OBJECTS if first_start else ()) + list(objects)
    for number, (type_name, data) in enumerate(listed):
        records.setdefault(type_name, []).append((f"id{number}", data))
    if outbound is not None:
        records["MtaOutboundStrategy"] = [("singleton", dict(outbound))]
    return build_snapshot(records, {})
