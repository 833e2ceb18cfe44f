"""The engine snapshot: immutable, rebuilt after each successful /set, resilient at open."""

from __future__ import annotations

import json
import logging

import pytest

from delivery.registry import Registry
from delivery.registry.snapshot import AttemptsExpiry, MxRoute, RelayRoute
from tests.plugins.registry import run_sql, set_ok


async def test_snapshot_is_rebuilt_after_a_successful_set_only(registry: Registry) -> None:
    first = registry.snapshot()
    assert registry.snapshot() is first  # cheap: not rebuilt per call
    failed = await registry.set(
        "MtaTlsStrategy", if_in_state=None, create={"x": {"name": ""}}, update=None, destroy=None
    )
    assert failed["notCreated"]
    assert registry.snapshot() is first

    await set_ok(
        registry,
        "MtaTlsStrategy",
        create={"s": {"name": "Strict", "startTls": "require", "dane": "require"}},
    )
    second = registry.snapshot()
    assert second is not first
    strict = second.tls_strategy("strict")  # names are looked up regardless of case
    assert (strict.name, strict.start_tls, strict.dane) == ("Strict", "require", "require")
    assert ("MtaTlsStrategy", "strict") in second.objects
    assert ("MtaTlsStrategy", "strict") not in first.objects  # the old one did not change
    assert second.states["MtaTlsStrategy"] != first.states["MtaTlsStrategy"]


async def test_snapshot_values_of_every_type(registry: Registry) -> None:
    await set_ok(
        registry,
        "MtaRoute",
        create={"r": {"@type": "Relay", "name": "relay", "address": "192.0.2.7", "port": 2525}},
    )
    await set_ok(
        registry,
        "MtaDeliverySchedule",
        create={
            "s": {
                "name": "once",
                "queue": "remote",
                "retry": ["1m"],
                "expiry": {"@type": "Attempts", "maxAttempts": 1},
            }
        },
    )
    await set_ok(
        registry,
        "MtaConnectionStrategy",
        create={
            "c": {
                "name": "pool",
                "sourceIps": [{"sourceIp": "192.0.2.1", "ehloHostname": "a.example"}],
                "dataTimeout": "20m",
            }
        },
    )
    snap = registry.snapshot()
    relay = snap.route("relay")
    assert isinstance(relay, RelayRoute) and (relay.address, relay.port) == ("192.0.2.7", 2525)
    assert isinstance(snap.route("mx"), MxRoute)
    once = snap.schedule("once")
    assert once.retry_ms == (60_000,) and once.expiry == AttemptsExpiry(1)
    pool = snap.connection_strategy("pool")
    assert pool.data_timeout_ms == 1_200_000
    assert pool.source_ips[0].ehlo_hostname == "a.example"
    assert snap.virtual_queue("remote").threads_per_node == 50


async def test_a_name_no_object_has_gives_builtin_defaults_and_one_warning(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    snap = registry.snapshot()
    with caplog.at_level(logging.WARNING, logger="delivery.registry"):
        first = snap.tls_strategy("missing")
        snap.tls_strategy("MISSING")
    assert (first.id, first.name, first.start_tls, first.tls_timeout_ms) == (
        None,
        "missing",
        "optional",
        180000,
    )
    assert len([r for r in caplog.records if "missing" in r.getMessage()]) == 1
    route = snap.route("nowhere")
    assert isinstance(route, MxRoute) and route.max_mx_hosts == 5
    schedule = snap.schedule("nothing")
    assert schedule.queue == "remote" and schedule.retry_ms[0] == 120_000
    assert snap.connection_strategy("none").connect_timeout_ms == 300_000
    assert snap.virtual_queue("none").threads_per_node == 25


async def test_a_stored_expression_that_no_longer_compiles_falls_back(registry_url: str) -> None:
    reg = await Registry.open(registry_url)
    await reg.close()
    # Tamper with the database as an older version (or a hand edit) might have left it.
    [(text,)] = await run_sql(
        registry_url, "SELECT data FROM registry_objects WHERE type = 'MtaOutboundStrategy'"
    )
    data = json.loads(text)
    data["tls"]["else"] = "no_such_function()"
    data["route"]["else"] = "'relay'"
    await run_sql(
        registry_url,
        "UPDATE registry_objects SET data = :data WHERE type = 'MtaOutboundStrategy'",
        {"data": json.dumps(data)},
    )
    await run_sql(
        registry_url,
        'UPDATE registry_objects SET data = \'{"name": "broken", "threadsPerNode": 0}\' '
        "WHERE type = 'MtaVirtualQueue' AND name_key = 'dsn'",
    )
    reopened = await Registry.open(registry_url)
    try:
        snap = reopened.snapshot()
        assert snap.outbound.tls.evaluate({"retry_num": 0}) == "default"  # built-in
        assert snap.outbound.route.evaluate({"rcpt_domain": "example.net"}) == "relay"  # kept
        assert len(snap.problems) == 2
        assert any("MtaVirtualQueue" in p and "threadsPerNode" in p for p in snap.problems)
        assert any("tls" in p for p in snap.problems)
        assert "dsn" not in {q.name for q in snap.virtual_queues}
    finally:
        await reopened.close()
