"""Every way a /set create can be refused for its values, and the wire forms it accepts."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.registry import Registry
from tests.plugins.registry import set_ok

RELAY = {"@type": "Relay", "name": "smarthost", "address": "relay.example.net"}
SCHEDULE = {"name": "bulk", "queue": "remote"}

# (label, type, object, SetError type, properties named)
REFUSED: list[tuple[str, str, dict[str, Any], str, list[str]]] = [
    (
        "unknown property",
        "MtaTlsStrategy",
        {"name": "x", "colour": "red"},
        "invalidProperties",
        ["colour"],
    ),
    ("missing name", "MtaTlsStrategy", {"startTls": "require"}, "invalidProperties", ["name"]),
    ("empty name", "MtaTlsStrategy", {"name": ""}, "invalidProperties", ["name"]),
    ("name with a space", "MtaTlsStrategy", {"name": "a b"}, "invalidProperties", ["name"]),
    ("name starting with '-'", "MtaTlsStrategy", {"name": "-x"}, "invalidProperties", ["name"]),
    ("name too long", "MtaTlsStrategy", {"name": "a" * 65}, "invalidProperties", ["name"]),
    ("name not a string", "MtaTlsStrategy", {"name": 7}, "invalidProperties", ["name"]),
    (
        "id given on create",
        "MtaTlsStrategy",
        {"id": "zz", "name": "x"},
        "invalidProperties",
        ["id"],
    ),
    (
        "bool as a string",
        "MtaTlsStrategy",
        {"name": "x", "allowInvalidCerts": "true"},
        "invalidProperties",
        ["allowInvalidCerts"],
    ),
    (
        "bool as a number",
        "MtaTlsStrategy",
        {"name": "x", "allowInvalidCerts": 1},
        "invalidProperties",
        ["allowInvalidCerts"],
    ),
    (
        "enum outside the set",
        "MtaTlsStrategy",
        {"name": "x", "startTls": "required"},
        "invalidProperties",
        ["startTls"],
    ),
    (
        "enum in other case",
        "MtaTlsStrategy",
        {"name": "x", "dane": "Optional"},
        "invalidProperties",
        ["dane"],
    ),
    (
        "zero duration",
        "MtaTlsStrategy",
        {"name": "x", "tlsTimeout": 0},
        "invalidProperties",
        ["tlsTimeout"],
    ),
    (
        "negative duration",
        "MtaTlsStrategy",
        {"name": "x", "tlsTimeout": -5},
        "invalidProperties",
        ["tlsTimeout"],
    ),
    (
        "zero duration text",
        "MtaTlsStrategy",
        {"name": "x", "mtaStsTimeout": "0s"},
        "invalidProperties",
        ["mtaStsTimeout"],
    ),
    (
        "unknown unit",
        "MtaTlsStrategy",
        {"name": "x", "mtaStsTimeout": "5y"},
        "invalidProperties",
        ["mtaStsTimeout"],
    ),
    (
        "fractional duration",
        "MtaTlsStrategy",
        {"name": "x", "tlsTimeout": 1.5},
        "invalidProperties",
        ["tlsTimeout"],
    ),
    (
        "duration as a bool",
        "MtaTlsStrategy",
        {"name": "x", "tlsTimeout": True},
        "invalidProperties",
        ["tlsTimeout"],
    ),
    (
        "absurd duration",
        "MtaTlsStrategy",
        {"name": "x", "tlsTimeout": "5000d"},
        "invalidProperties",
        ["tlsTimeout"],
    ),
    (
        "description not a string",
        "MtaTlsStrategy",
        {"name": "x", "description": 5},
        "invalidProperties",
        ["description"],
    ),
    ("duplicate name", "MtaTlsStrategy", {"name": "default"}, "alreadyExists", []),
    ("duplicate name, other case", "MtaTlsStrategy", {"name": "INVALID-TLS"}, "alreadyExists", []),
    ("route without @type", "MtaRoute", {"name": "r"}, "invalidProperties", ["@type"]),
    (
        "route of unknown @type",
        "MtaRoute",
        {"name": "r", "@type": "Smtp"},
        "invalidProperties",
        ["@type"],
    ),
    (
        "relay without address",
        "MtaRoute",
        {"@type": "Relay", "name": "r"},
        "invalidProperties",
        ["address"],
    ),
    (
        "relay with a bad host",
        "MtaRoute",
        {**RELAY, "address": "relay..example"},
        "invalidProperties",
        ["address"],
    ),
    ("relay port 0", "MtaRoute", {**RELAY, "port": 0}, "invalidProperties", ["port"]),
    ("relay port too big", "MtaRoute", {**RELAY, "port": 65536}, "invalidProperties", ["port"]),
    (
        "relay protocol",
        "MtaRoute",
        {**RELAY, "protocol": "http"},
        "invalidProperties",
        ["protocol"],
    ),
    (
        "Mx property on a relay",
        "MtaRoute",
        {**RELAY, "maxMxHosts": 3},
        "invalidProperties",
        ["maxMxHosts"],
    ),
    (
        "Mx ip strategy",
        "MtaRoute",
        {"@type": "Mx", "name": "r", "ipLookupStrategy": "v4"},
        "invalidProperties",
        ["ipLookupStrategy"],
    ),
    (
        "Mx hosts 0",
        "MtaRoute",
        {"@type": "Mx", "name": "r", "maxMxHosts": 0},
        "invalidProperties",
        ["maxMxHosts"],
    ),
    (
        "secret without @type",
        "MtaRoute",
        {**RELAY, "authSecret": {"secret": "pw"}},
        "invalidProperties",
        ["authSecret"],
    ),
    (
        "secret of unknown @type",
        "MtaRoute",
        {**RELAY, "authSecret": {"@type": "Vault", "secret": "pw"}},
        "invalidProperties",
        ["authSecret"],
    ),
    (
        "bad variable name",
        "MtaRoute",
        {**RELAY, "authSecret": {"@type": "EnvironmentVariable", "variableName": "A-B"}},
        "invalidProperties",
        ["authSecret"],
    ),
    (
        "relative secret file",
        "MtaRoute",
        {**RELAY, "authSecret": {"@type": "File", "filePath": "pw.txt"}},
        "invalidProperties",
        ["authSecret"],
    ),
    (
        "the mask as a secret",
        "MtaRoute",
        {**RELAY, "authSecret": {"@type": "Value", "secret": "********"}},
        "invalidProperties",
        ["authSecret"],
    ),
    (
        "source ip not an address",
        "MtaConnectionStrategy",
        {"name": "c", "sourceIps": [{"sourceIp": "10.0.0.300"}]},
        "invalidProperties",
        ["sourceIps"],
    ),
    (
        "source ip entry unknown key",
        "MtaConnectionStrategy",
        {"name": "c", "sourceIps": [{"sourceIp": "10.0.0.1", "port": 1}]},
        "invalidProperties",
        ["sourceIps"],
    ),
    (
        "ehlo name not a host",
        "MtaConnectionStrategy",
        {"name": "c", "ehloHostname": "mta example"},
        "invalidProperties",
        ["ehloHostname"],
    ),
    (
        "connect timeout 0",
        "MtaConnectionStrategy",
        {"name": "c", "connectTimeout": "0ms"},
        "invalidProperties",
        ["connectTimeout"],
    ),
    (
        "schedule without queue",
        "MtaDeliverySchedule",
        {"name": "s"},
        "invalidProperties",
        ["queue"],
    ),
    (
        "schedule on an unknown queue",
        "MtaDeliverySchedule",
        {"name": "s", "queue": "nowhere"},
        "invalidProperties",
        ["queue"],
    ),
    (
        "empty retry",
        "MtaDeliverySchedule",
        {**SCHEDULE, "retry": []},
        "invalidProperties",
        ["retry"],
    ),
    (
        "retry not a list",
        "MtaDeliverySchedule",
        {**SCHEDULE, "retry": "5m"},
        "invalidProperties",
        ["retry"],
    ),
    (
        "non-positive retry step",
        "MtaDeliverySchedule",
        {**SCHEDULE, "retry": ["5m", 0]},
        "invalidProperties",
        ["retry"],
    ),
    (
        "expiry without @type",
        "MtaDeliverySchedule",
        {**SCHEDULE, "expiry": {"expire": "1d"}},
        "invalidProperties",
        ["expiry"],
    ),
    (
        "expiry of unknown @type",
        "MtaDeliverySchedule",
        {**SCHEDULE, "expiry": {"@type": "Never"}},
        "invalidProperties",
        ["expiry"],
    ),
    (
        "zero max attempts",
        "MtaDeliverySchedule",
        {**SCHEDULE, "expiry": {"@type": "Attempts", "maxAttempts": 0}},
        "invalidProperties",
        ["expiry"],
    ),
    (
        "Ttl with attempts",
        "MtaDeliverySchedule",
        {**SCHEDULE, "expiry": {"@type": "Ttl", "maxAttempts": 3}},
        "invalidProperties",
        ["expiry"],
    ),
    (
        "zero threads",
        "MtaVirtualQueue",
        {"name": "q", "threadsPerNode": 0},
        "invalidProperties",
        ["threadsPerNode"],
    ),
    (
        "threads as text",
        "MtaVirtualQueue",
        {"name": "q", "threadsPerNode": "5"},
        "invalidProperties",
        ["threadsPerNode"],
    ),
    ("singleton create", "MtaOutboundStrategy", {}, "singleton", []),
]


@pytest.mark.parametrize(
    ("type_name", "obj", "error_type", "properties"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_create_is_refused(
    registry: Registry, type_name: str, obj: dict[str, Any], error_type: str, properties: list[str]
) -> None:
    before = await registry.get(type_name, ids=None, properties=None)
    result = await registry.set(
        type_name, if_in_state=None, create={"new": obj}, update=None, destroy=None
    )
    error = result["notCreated"]["new"]
    assert error["type"] == error_type
    assert error.get("properties", []) == properties
    assert error["description"]
    for prop in properties:
        assert prop in error["description"]
    assert result["created"] is None
    assert result["newState"] == result["oldState"]
    assert await registry.get(type_name, ids=None, properties=None) == before


async def test_description_names_the_path_and_the_value(registry: Registry) -> None:
    result = await registry.set(
        "MtaConnectionStrategy",
        if_in_state=None,
        create={"c": {"name": "c", "sourceIps": [{"sourceIp": "10.0.0.1"}, {"sourceIp": "x"}]}},
        update=None,
        destroy=None,
    )
    description = result["notCreated"]["c"]["description"]
    assert "sourceIps/1/sourceIp" in description
    assert "'x'" in description


async def test_every_fault_of_an_object_is_reported_at_once(registry: Registry) -> None:
    result = await registry.set(
        "MtaTlsStrategy",
        if_in_state=None,
        create={"t": {"name": "t", "dane": "on", "tlsTimeout": -1, "extra": 1}},
        update=None,
        destroy=None,
    )
    assert result["notCreated"]["t"]["properties"] == ["dane", "tlsTimeout", "extra"]


async def test_a_refused_secret_is_never_quoted(registry: Registry) -> None:
    secret = "s3cr3t-" + "x" * 5000  # longer than any secret allowed
    result = await registry.set(
        "MtaRoute",
        if_in_state=None,
        create={"r": {**RELAY, "authSecret": {"@type": "Value", "secret": secret}}},
        update=None,
        destroy=None,
    )
    assert "s3cr3t" not in str(result)


async def test_duplicate_name_gives_the_existing_id(registry: Registry) -> None:
    listed = await registry.get("MtaTlsStrategy", ids=None, properties=["name"])
    default_id = next(o["id"] for o in listed["list"] if o["name"] == "default")
    result = await registry.set(
        "MtaTlsStrategy",
        if_in_state=None,
        create={"d": {"name": "Default"}},
        update=None,
        destroy=None,
    )
    assert result["notCreated"]["d"]["existingId"] == default_id


# (label, wire value, milliseconds)
DURATIONS = [
    ("integer milliseconds", 1500, 1500),
    ("100ms", "100ms", 100),
    ("90s", "90s", 90_000),
    ("3m", "3m", 180_000),
    ("5m", "5m", 300_000),
    ("1h", "1h", 3_600_000),
    ("2d", "2d", 172_800_000),
]


@pytest.mark.parametrize(("text", "ms"), [c[1:] for c in DURATIONS], ids=[c[0] for c in DURATIONS])
async def test_durations_are_accepted_as_text_and_returned_as_integers(
    registry: Registry, text: Any, ms: int
) -> None:
    result = await set_ok(
        registry, "MtaTlsStrategy", create={"t": {"name": "t", "tlsTimeout": text}}
    )
    created = result["created"]["t"]
    got = await registry.get("MtaTlsStrategy", ids=[created["id"]], properties=["tlsTimeout"])
    assert got["list"] == [{"id": created["id"], "tlsTimeout": ms}]
    if isinstance(text, str):  # the server changed the value: the response says so
        assert created["tlsTimeout"] == ms


async def test_every_variant_and_nested_object_round_trips(registry: Registry) -> None:
    relay: dict[str, Any] = {
        "@type": "Relay",
        "name": "relay",
        "description": "the smart host",
        "address": "2001:db8::1",
        "port": 587,
        "protocol": "lmtp",
        "implicitTls": True,
        "allowInvalidCerts": True,
        "authUsername": "user",
        "authSecret": {"@type": "File", "filePath": "/run/secrets/relay"},
    }
    schedule: dict[str, Any] = {
        "name": "bulk",
        "description": None,
        "queue": "remote",
        "retry": [60000, 120000],
        "notify": [],
        "expiry": {"@type": "Attempts", "maxAttempts": 3},
    }
    connection: dict[str, Any] = {
        "name": "pool",
        "description": None,
        "ehloHostname": "mta.example.org",
        "sourceIps": [
            {"sourceIp": "192.0.2.1", "ehloHostname": "out1.example.org"},
            {"sourceIp": "2001:db8::25", "ehloHostname": None},
        ],
        "connectTimeout": 1000,
        "greetingTimeout": 2000,
        "ehloTimeout": 3000,
        "mailFromTimeout": 4000,
        "rcptToTimeout": 5000,
        "dataTimeout": 6000,
    }
    for type_name, obj in [
        ("MtaRoute", relay),
        ("MtaDeliverySchedule", schedule),
        ("MtaConnectionStrategy", connection),
    ]:
        result = await set_ok(registry, type_name, create={"n": obj})
        object_id = result["created"]["n"]["id"]
        got = await registry.get(type_name, ids=[object_id], properties=None)
        assert got["list"] == [{"id": object_id, **obj}]


async def test_ip_addresses_are_stored_in_canonical_form(registry: Registry) -> None:
    result = await set_ok(
        registry,
        "MtaConnectionStrategy",
        create={"c": {"name": "c", "sourceIps": [{"sourceIp": "2001:DB8:0:0::1"}]}},
    )
    assert result["created"]["c"]["sourceIps"] == [
        {"sourceIp": "2001:db8::1", "ehloHostname": None}
    ]
