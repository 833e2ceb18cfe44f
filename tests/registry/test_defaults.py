"""A fresh store holds exactly the DESIGN §3 first-start objects, with the DESIGN defaults."""

from __future__ import annotations

from typing import Any

from delivery.registry import Registry

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

OUTBOUND = {
    "id": "singleton",
    "connection": {"match": [], "else": "'default'"},
    "route": {
        "match": [{"if": "is_local_domain(rcpt_domain)", "then": "'local'"}],
        "else": "'mx'",
    },
    "schedule": {
        "match": [
            {"if": "is_local_domain(rcpt_domain)", "then": "'local'"},
            {"if": "source == 'dsn'", "then": "'dsn'"},
            {"if": "source == 'report'", "then": "'report'"},
        ],
        "else": "'remote'",
    },
    "tls": {
        "match": [{"if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'"}],
        "else": "'default'",
    },
}

TLS: dict[str, dict[str, Any]] = {
    "default": {
        "name": "default",
        "description": None,
        "allowInvalidCerts": False,
        "dane": "optional",
        "mtaSts": "optional",
        "startTls": "optional",
        "mtaStsTimeout": 300000,
        "tlsTimeout": 180000,
    },
    "invalid-tls": {
        "name": "invalid-tls",
        "description": None,
        "allowInvalidCerts": True,
        "dane": "optional",
        "mtaSts": "optional",
        "startTls": "optional",
        "mtaStsTimeout": 300000,
        "tlsTimeout": 180000,
    },
}

ROUTES: dict[str, dict[str, Any]] = {
    "mx": {
        "@type": "Mx",
        "name": "mx",
        "description": None,
        "ipLookupStrategy": "v4ThenV6",
        "maxMultihomed": 2,
        "maxMxHosts": 5,
    },
    "local": {"@type": "Local", "name": "local", "description": None},
}

CONNECTIONS: dict[str, dict[str, Any]] = {
    "default": {
        "name": "default",
        "description": None,
        "ehloHostname": None,
        "sourceIps": [],
        "connectTimeout": 5 * MIN,
        "greetingTimeout": 5 * MIN,
        "ehloTimeout": 5 * MIN,
        "mailFromTimeout": 5 * MIN,
        "rcptToTimeout": 5 * MIN,
        "dataTimeout": 10 * MIN,
    }
}

QUEUES: dict[str, dict[str, Any]] = {
    name: {"name": name, "description": None, "threadsPerNode": threads}
    for name, threads in [("local", 25), ("remote", 50), ("dsn", 5), ("report", 5)]
}

SHORT_RETRY = [2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR]
SCHEDULES: dict[str, dict[str, Any]] = {
    "local": {
        "name": "local",
        "description": None,
        "queue": "local",
        "retry": [MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR],
        "notify": [DAY],
        "expiry": {"@type": "Ttl", "expire": 3 * DAY},
    },
    "remote": {
        "name": "remote",
        "description": None,
        "queue": "remote",
        "retry": [
            2 * MIN,
            5 * MIN,
            10 * MIN,
            15 * MIN,
            30 * MIN,
            HOUR,
            2 * HOUR,
            24 * HOUR,
            3 * DAY,
        ],
        "notify": [DAY, 3 * DAY],
        "expiry": {"@type": "Ttl", "expire": 3 * DAY},
    },
    "dsn": {
        "name": "dsn",
        "description": None,
        "queue": "dsn",
        "retry": SHORT_RETRY,
        "notify": [],
        "expiry": {"@type": "Ttl", "expire": DAY},
    },
    "report": {
        "name": "report",
        "description": None,
        "queue": "report",
        "retry": SHORT_RETRY,
        "notify": [],
        "expiry": {"@type": "Ttl", "expire": DAY},
    },
}

COLLECTIONS: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("MtaTlsStrategy", TLS),
    ("MtaRoute", ROUTES),
    ("MtaConnectionStrategy", CONNECTIONS),
    ("MtaVirtualQueue", QUEUES),
    ("MtaDeliverySchedule", SCHEDULES),
]


async def test_object_types_are_the_design_ones(registry: Registry) -> None:
    assert set(registry.object_types) == {
        "MtaOutboundStrategy",
        "MtaTlsStrategy",
        "MtaRoute",
        "MtaConnectionStrategy",
        "MtaDeliverySchedule",
        "MtaVirtualQueue",
    }


async def test_outbound_strategy_defaults_are_exactly_design(registry: Registry) -> None:
    result = await registry.get("MtaOutboundStrategy", ids=None, properties=None)
    assert result == {"state": "0", "list": [OUTBOUND], "notFound": []}


async def test_collections_hold_exactly_the_first_start_objects(registry: Registry) -> None:
    for type_name, expected in COLLECTIONS:
        result = await registry.get(type_name, ids=None, properties=None)
        assert result["state"] == "0"
        by_name = {}
        for obj in result["list"]:
            assert isinstance(obj.pop("id"), str)
            by_name[obj["name"]] = obj
        assert by_name == expected, type_name


async def test_first_start_objects_are_made_once(registry_url: str) -> None:
    first = await Registry.open(registry_url)
    listed = await first.get("MtaTlsStrategy", ids=None, properties=["name"])
    default_id = next(o["id"] for o in listed["list"] if o["name"] == "default")
    await first.set(
        "MtaTlsStrategy", if_in_state=None, create=None, update=None, destroy=[default_id]
    )
    await first.close()

    again = await Registry.open(registry_url)
    try:
        names = [
            o["name"]
            for o in (await again.get("MtaTlsStrategy", ids=None, properties=None))["list"]
        ]
        assert names == ["invalid-tls"]  # the operator's deletion stands
    finally:
        await again.close()


async def test_defaults_compile_into_the_first_snapshot(registry: Registry) -> None:
    snap = registry.snapshot()
    assert snap.problems == ()
    assert snap.outbound.tls.evaluate({"retry_num": 1, "last_error": "tls"}) == "invalid-tls"
    assert snap.outbound.tls.evaluate({"retry_num": 0, "last_error": "tls"}) == "default"
    assert snap.outbound.connection.evaluate({}) == "default"
    assert snap.tls_strategy("invalid-tls").allow_invalid_certs is True
    assert snap.schedule("remote").retry_ms[-1] == 3 * DAY
    assert {q.name: q.threads_per_node for q in snap.virtual_queues} == {
        "local": 25,
        "remote": 50,
        "dsn": 5,
        "report": 5,
    }
