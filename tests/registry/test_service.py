"""The /get and /set semantics the API layer and operators rely on."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.registry import MethodError, Registry
from tests.plugins.registry import set_ok


async def ids_by_name(reg: Registry, type_name: str) -> dict[str, str]:
    listed = await reg.get(type_name, ids=None, properties=["name"])
    return {o["name"]: o["id"] for o in listed["list"]}


async def one(reg: Registry, type_name: str, object_id: str) -> dict[str, Any]:
    got = await reg.get(type_name, ids=[object_id], properties=None)
    assert got["notFound"] == []
    return dict(got["list"][0])


async def update_error(
    reg: Registry, type_name: str, object_id: str, patch: dict[str, Any]
) -> dict[str, Any]:
    result = await reg.set(
        type_name, if_in_state=None, create=None, update={object_id: patch}, destroy=None
    )
    assert result["updated"] is None
    assert result["newState"] == result["oldState"]
    return dict(result["notUpdated"][object_id])


# --- /get ---------------------------------------------------------------------------------------


async def test_get_by_ids_reports_unknown_ones_and_answers_duplicates_once(
    registry: Registry,
) -> None:
    default_id = (await ids_by_name(registry, "MtaTlsStrategy"))["default"]
    got = await registry.get(
        "MtaTlsStrategy", ids=[default_id, "nope", default_id], properties=["startTls"]
    )
    assert got["list"] == [{"id": default_id, "startTls": "optional"}]
    assert got["notFound"] == ["nope"]


async def test_singleton_answers_to_its_literal_id_only(registry: Registry) -> None:
    got = await registry.get("MtaOutboundStrategy", ids=["singleton", "x"], properties=["tls"])
    assert [o["id"] for o in got["list"]] == ["singleton"]
    assert set(got["list"][0]) == {"id", "tls"}
    assert got["notFound"] == ["x"]


@pytest.mark.parametrize(
    ("call", "error_type"),
    [
        ("get unknown type", "unknownMethod"),
        ("get unknown property", "invalidArguments"),
        ("set unknown type", "unknownMethod"),
        ("query unknown type", "unknownMethod"),
    ],
)
async def test_method_errors(registry: Registry, call: str, error_type: str) -> None:
    with pytest.raises(MethodError) as caught:
        if call == "get unknown type":
            await registry.get("MtaNothing", ids=None, properties=None)
        elif call == "get unknown property":
            await registry.get("MtaTlsStrategy", ids=None, properties=["colour"])
        elif call == "set unknown type":
            await registry.set("MtaNothing", if_in_state=None, create={}, update=None, destroy=None)
        else:
            await registry.query("MtaNothing", filter=None, sort=None)
    assert caught.value.type == error_type
    assert caught.value.description


# --- /set: create --------------------------------------------------------------------------------


async def test_created_returns_the_id_and_every_server_set_value(registry: Registry) -> None:
    result = await set_ok(
        registry, "MtaTlsStrategy", create={"s": {"name": "strict", "startTls": "require"}}
    )
    created = result["created"]["s"]
    assert created == {
        "id": created["id"],
        "description": None,
        "allowInvalidCerts": False,
        "dane": "optional",
        "mtaSts": "optional",
        "mtaStsTimeout": 300000,
        "tlsTimeout": 180000,
    }
    assert result["oldState"] != result["newState"]


async def test_a_call_keeps_its_good_items_and_refuses_only_the_bad(registry: Registry) -> None:
    result = await registry.set(
        "MtaVirtualQueue",
        if_in_state=None,
        create={"good": {"name": "bulk"}, "bad": {"name": "worse", "threadsPerNode": 0}},
        update=None,
        destroy=["nope"],
    )
    assert set(result["created"]) == {"good"}
    assert set(result["notCreated"]) == {"bad"}
    assert result["notDestroyed"] == {
        "nope": {"type": "notFound", "description": result["notDestroyed"]["nope"]["description"]}
    }
    names = await ids_by_name(registry, "MtaVirtualQueue")
    assert "bulk" in names and "worse" not in names
    assert int(result["newState"]) == int(result["oldState"]) + 1  # one change per call


async def test_two_creates_with_one_name_in_one_call(registry: Registry) -> None:
    result = await registry.set(
        "MtaVirtualQueue",
        if_in_state=None,
        create={"a": {"name": "twin"}, "b": {"name": "TWIN"}},
        update=None,
        destroy=None,
    )
    assert result["notCreated"]["b"]["existingId"] == result["created"]["a"]["id"]


async def test_creation_ids_can_be_used_later_in_the_same_call(registry: Registry) -> None:
    result = await set_ok(
        registry,
        "MtaVirtualQueue",
        create={"q": {"name": "temp"}},
        update={"#q": {"threadsPerNode": 7}},
        destroy=["#q"],
    )
    new_id = result["created"]["q"]["id"]
    assert result["updated"] == {new_id: None}
    assert result["destroyed"] == [new_id]
    assert "temp" not in await ids_by_name(registry, "MtaVirtualQueue")


async def test_ids_are_never_reused(registry_url: str) -> None:
    seen: set[str] = set()
    for _ in range(2):  # across a restart too
        reg = await Registry.open(registry_url)
        try:
            seen.update((await ids_by_name(reg, "MtaTlsStrategy")).values())
            for _ in range(3):
                created = await set_ok(reg, "MtaTlsStrategy", create={"t": {"name": "temp"}})
                new_id = created["created"]["t"]["id"]
                assert new_id not in seen and new_id != "singleton"
                seen.add(new_id)
                await set_ok(reg, "MtaTlsStrategy", destroy=[new_id])
        finally:
            await reg.close()


# --- /set: update ---------------------------------------------------------------------------------


async def test_update_by_patch_paths(registry: Registry) -> None:
    await set_ok(
        registry,
        "MtaOutboundStrategy",
        update={
            "singleton": {
                "connection/else": "'pool'",
                "tls/match/0/then": "'relaxed'",
                "schedule/match/1": None,  # drop the dsn rule
                "route/match/1": {"if": "rcpt_domain == 'example.net'", "then": "'relay'"},
            }
        },
    )
    got = await one(registry, "MtaOutboundStrategy", "singleton")
    assert got["connection"] == {"match": [], "else": "'pool'"}
    assert got["tls"]["match"] == [
        {"if": "retry_num > 0 && last_error == 'tls'", "then": "'relaxed'"}
    ]
    assert [r["then"] for r in got["schedule"]["match"]] == ["'local'", "'report'"]
    assert got["route"]["match"][1] == {"if": "rcpt_domain == 'example.net'", "then": "'relay'"}


async def test_null_resets_a_property_to_its_default(registry: Registry) -> None:
    tls_id = (await ids_by_name(registry, "MtaTlsStrategy"))["invalid-tls"]
    await set_ok(registry, "MtaOutboundStrategy", update={"singleton": {"tls": {"else": "'x'"}}})
    result = await set_ok(
        registry,
        "MtaTlsStrategy",
        update={tls_id: {"allowInvalidCerts": None, "tlsTimeout": "1m", "description": "d"}},
    )
    # The server changed two of the values sent: the default, and the text duration.
    assert result["updated"] == {tls_id: {"allowInvalidCerts": False, "tlsTimeout": 60000}}
    result = await set_ok(registry, "MtaOutboundStrategy", update={"singleton": {"tls": None}})
    assert result["updated"]["singleton"]["tls"]["else"] == "'default'"


async def test_match_given_as_an_object_is_ordered_numerically(registry: Registry) -> None:
    rules = {
        "10": {"if": "retry_num > 9", "then": "'c'"},
        "2": {"if": "retry_num > 2", "then": "'b'"},
        "0": {"if": "retry_num > 0", "then": "'a'"},
    }
    await set_ok(
        registry,
        "MtaOutboundStrategy",
        update={"singleton": {"tls": {"match": rules, "else": "'z'"}}},
    )
    got = await one(registry, "MtaOutboundStrategy", "singleton")
    assert [r["then"] for r in got["tls"]["match"]] == ["'a'", "'b'", "'c'"]
    error = await update_error(
        registry,
        "MtaOutboundStrategy",
        "singleton",
        {"tls": {"match": {"0": rules["0"], "first": rules["2"]}, "else": "'z'"}},
    )
    assert error["type"] == "invalidProperties" and error["properties"] == ["tls"]
    assert "'first'" in error["description"]


async def test_match_may_be_omitted(registry: Registry) -> None:
    result = await set_ok(
        registry, "MtaOutboundStrategy", update={"singleton": {"route": {"else": "'mx'"}}}
    )
    assert result["updated"] == {"singleton": {"route": {"match": [], "else": "'mx'"}}}


# (label, patch, SetError type, properties)
UPDATE_REFUSED: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("changed name", {"name": "other"}, "invalidProperties", ["name"]),
    ("name in other case", {"name": "DEFAULT"}, "invalidProperties", ["name"]),
    ("name reset", {"name": None}, "invalidProperties", ["name"]),
    ("changed id", {"id": "other"}, "invalidProperties", ["id"]),
    ("unknown property", {"colour": "red"}, "invalidProperties", ["colour"]),
    ("unknown property path", {"colour/x": 1}, "invalidProperties", ["colour"]),
    ("wrong type", {"allowInvalidCerts": "yes"}, "invalidProperties", ["allowInvalidCerts"]),
    ("bad enum", {"mtaSts": "enforce"}, "invalidProperties", ["mtaSts"]),
    ("zero duration", {"tlsTimeout": "0m"}, "invalidProperties", ["tlsTimeout"]),
    ("path through a scalar", {"startTls/x": 1}, "invalidPatch", []),
    ("malformed pointer", {"description~": "x"}, "invalidPatch", []),
    ("overlapping paths", {"description": "x", "description/y": 1}, "invalidPatch", []),
]


@pytest.mark.parametrize(
    ("patch", "error_type", "properties"),
    [c[1:] for c in UPDATE_REFUSED],
    ids=[c[0] for c in UPDATE_REFUSED],
)
async def test_update_is_refused(
    registry: Registry, patch: dict[str, Any], error_type: str, properties: list[str]
) -> None:
    default_id = (await ids_by_name(registry, "MtaTlsStrategy"))["default"]
    before = await one(registry, "MtaTlsStrategy", default_id)
    error = await update_error(registry, "MtaTlsStrategy", default_id, patch)
    assert error["type"] == error_type
    assert error.get("properties", []) == properties
    assert await one(registry, "MtaTlsStrategy", default_id) == before


async def test_repeating_the_name_and_id_is_not_a_change(registry: Registry) -> None:
    default_id = (await ids_by_name(registry, "MtaTlsStrategy"))["default"]
    await set_ok(
        registry,
        "MtaTlsStrategy",
        update={default_id: {"id": default_id, "name": "default", "startTls": "require"}},
    )
    assert (await one(registry, "MtaTlsStrategy", default_id))["startTls"] == "require"


async def test_update_of_an_unknown_id(registry: Registry) -> None:
    assert (await update_error(registry, "MtaTlsStrategy", "nope", {}))["type"] == "notFound"
    error = await update_error(registry, "MtaOutboundStrategy", "other", {"tls": None})
    assert error["type"] == "notFound"


async def test_singleton_refuses_create_and_destroy(registry: Registry) -> None:
    result = await registry.set(
        "MtaOutboundStrategy",
        if_in_state=None,
        create={"n": {}},
        update=None,
        destroy=["singleton"],
    )
    assert result["notCreated"]["n"]["type"] == "singleton"
    assert result["notDestroyed"]["singleton"]["type"] == "singleton"
    assert "singleton" in result["notCreated"]["n"]["description"]


async def test_changing_a_routes_type_starts_it_afresh(registry: Registry) -> None:
    mx_id = (await ids_by_name(registry, "MtaRoute"))["mx"]
    error = await update_error(registry, "MtaRoute", mx_id, {"@type": "Relay"})
    assert error["properties"] == ["address"]
    await set_ok(
        registry,
        "MtaRoute",
        update={mx_id: {"@type": "Relay", "address": "smarthost.example.net", "port": 587}},
    )
    got = await one(registry, "MtaRoute", mx_id)
    assert got == {
        "id": mx_id,
        "@type": "Relay",
        "name": "mx",
        "description": None,
        "address": "smarthost.example.net",
        "port": 587,
        "protocol": "smtp",
        "implicitTls": False,
        "allowInvalidCerts": False,
        "authUsername": None,
        "authSecret": None,
    }


# --- /set: destroy and references ---------------------------------------------------------------


async def test_destroy(registry: Registry) -> None:
    default_id = (await ids_by_name(registry, "MtaTlsStrategy"))["default"]
    result = await set_ok(registry, "MtaTlsStrategy", destroy=[default_id])
    assert result["destroyed"] == [default_id]
    got = await registry.get("MtaTlsStrategy", ids=[default_id], properties=None)
    assert got["notFound"] == [default_id]
    again = await registry.set(
        "MtaTlsStrategy", if_in_state=None, create=None, update=None, destroy=[default_id]
    )
    assert again["notDestroyed"][default_id]["type"] == "notFound"


async def test_a_virtual_queue_in_use_cannot_be_destroyed(registry: Registry) -> None:
    queues = await ids_by_name(registry, "MtaVirtualQueue")
    schedules = await ids_by_name(registry, "MtaDeliverySchedule")
    result = await registry.set(
        "MtaVirtualQueue", if_in_state=None, create=None, update=None, destroy=[queues["dsn"]]
    )
    error = result["notDestroyed"][queues["dsn"]]
    assert error["type"] == "objectIsLinked"
    assert error["linkedIds"] == [schedules["dsn"]]
    await set_ok(registry, "MtaDeliverySchedule", update={schedules["dsn"]: {"queue": "remote"}})
    await set_ok(registry, "MtaVirtualQueue", destroy=[queues["dsn"]])


async def test_a_schedule_must_name_an_existing_queue(registry: Registry) -> None:
    remote = (await ids_by_name(registry, "MtaDeliverySchedule"))["remote"]
    error = await update_error(registry, "MtaDeliverySchedule", remote, {"queue": "nowhere"})
    assert error["properties"] == ["queue"]
    await set_ok(registry, "MtaDeliverySchedule", update={remote: {"queue": "LOCAL"}})


# --- states and permissions -----------------------------------------------------------------------


async def test_if_in_state(registry: Registry) -> None:
    state = (await registry.get("MtaVirtualQueue", ids=[], properties=None))["state"]
    with pytest.raises(MethodError) as caught:
        await registry.set(
            "MtaVirtualQueue",
            if_in_state="stale",
            create={"q": {"name": "q"}},
            update=None,
            destroy=None,
        )
    assert caught.value.type == "stateMismatch"
    assert "q" not in await ids_by_name(registry, "MtaVirtualQueue")
    result = await registry.set(
        "MtaVirtualQueue", if_in_state=state, create={"q": {"name": "q"}}, update=None, destroy=None
    )
    assert result["oldState"] == state and result["newState"] != state
    assert (await registry.get("MtaVirtualQueue", ids=[], properties=None))["state"] == result[
        "newState"
    ]
    # Other types' states do not move.
    assert (await registry.get("MtaTlsStrategy", ids=[], properties=None))["state"] == "0"


@pytest.mark.parametrize("denied", ["create", "update", "destroy"])
async def test_each_operation_is_checked_per_item(registry: Registry, denied: str) -> None:
    queues = await ids_by_name(registry, "MtaVirtualQueue")
    result = await registry.set(
        "MtaVirtualQueue",
        if_in_state=None,
        create={"n": {"name": "new"}},
        update={queues["local"]: {"threadsPerNode": 3}},
        destroy=[queues["report"]] if denied != "destroy" else [queues["local"]],
        allowed=lambda op: op != denied,
    )
    member = {"create": "notCreated", "update": "notUpdated", "destroy": "notDestroyed"}[denied]
    refused = result[member]
    assert [e["type"] for e in refused.values()] == ["forbidden"]


async def test_report_queue_can_go_once_its_schedule_is_gone(registry: Registry) -> None:
    schedules = await ids_by_name(registry, "MtaDeliverySchedule")
    queues = await ids_by_name(registry, "MtaVirtualQueue")
    await set_ok(registry, "MtaDeliverySchedule", destroy=[schedules["report"]])
    await set_ok(registry, "MtaVirtualQueue", destroy=[queues["report"]])


# --- persistence ----------------------------------------------------------------------------------


async def test_changes_survive_a_restart(registry_url: str) -> None:
    reg = await Registry.open(registry_url)
    created = await set_ok(
        reg, "MtaTlsStrategy", create={"s": {"name": "strict", "startTls": "require"}}
    )
    strict_id = created["created"]["s"]["id"]
    await set_ok(reg, "MtaOutboundStrategy", update={"singleton": {"tls/else": "'strict'"}})
    await reg.set_meta("api.admin_token_sha256", "abc")
    states = {t: (await reg.get(t, ids=[], properties=None))["state"] for t in reg.object_types}
    await reg.close()

    reopened = await Registry.open(registry_url)
    try:
        assert (await one(reopened, "MtaTlsStrategy", strict_id))["startTls"] == "require"
        outbound = await one(reopened, "MtaOutboundStrategy", "singleton")
        assert outbound["tls"]["else"] == "'strict'"
        assert await reopened.get_meta("api.admin_token_sha256") == "abc"
        assert await reopened.get_meta("missing") is None
        for type_name, state in states.items():
            assert (await reopened.get(type_name, ids=[], properties=None))["state"] == state
        snap = reopened.snapshot()
        assert snap.outbound.tls.evaluate({"retry_num": 0}) == "strict"
        assert snap.tls_strategy("strict").start_tls == "require"
    finally:
        await reopened.close()


async def test_registry_is_an_async_context_manager(registry_url: str) -> None:
    async with await Registry.open(registry_url) as reg:
        await reg.set_meta("k", "v1")
        await reg.set_meta("k", "v2")
        assert await reg.get_meta("k") == "v2"
