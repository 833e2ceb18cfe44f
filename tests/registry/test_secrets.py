"""A relay password is never answered in clear; the engine still gets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.errors import ConfigError
from delivery.registry import Registry
from tests.plugins.registry import set_ok

SECRET = "hunter2-correct-horse"
RELAY = {
    "@type": "Relay",
    "name": "smarthost",
    "address": "relay.example.net",
    "authUsername": "mta",
    "authSecret": {"@type": "Value", "secret": SECRET},
}
MASKED = {"@type": "Value", "secret": "********"}


async def create_relay(reg: Registry) -> str:
    result = await set_ok(reg, "MtaRoute", create={"r": RELAY})
    assert SECRET not in str(result)
    return str(result["created"]["r"]["id"])


async def test_get_masks_the_secret(registry: Registry) -> None:
    relay_id = await create_relay(registry)
    got = await registry.get("MtaRoute", ids=None, properties=None)
    assert SECRET not in str(got)
    relay = next(o for o in got["list"] if o["id"] == relay_id)
    assert relay["authSecret"] == MASKED


async def test_the_engine_snapshot_has_the_secret(registry: Registry) -> None:
    await create_relay(registry)
    route = registry.snapshot().route("smarthost")
    assert route.name == "smarthost"
    secret = getattr(route, "auth_secret", None)
    assert secret is not None
    assert SECRET not in repr(route)
    assert await secret.reveal() == SECRET


async def test_sending_back_the_mask_keeps_the_secret(registry: Registry) -> None:
    relay_id = await create_relay(registry)
    got = (await registry.get("MtaRoute", ids=[relay_id], properties=None))["list"][0]
    got.pop("id")
    got["description"] = "edited in a UI that round-trips the whole object"
    result = await set_ok(registry, "MtaRoute", update={relay_id: got})
    assert SECRET not in str(result)
    route = registry.snapshot().route("smarthost")
    secret = getattr(route, "auth_secret", None)
    assert secret is not None and await secret.reveal() == SECRET
    # and a new secret replaces it
    await set_ok(registry, "MtaRoute", update={relay_id: {"authSecret/secret": "new-one"}})
    secret = getattr(registry.snapshot().route("smarthost"), "auth_secret", None)
    assert secret is not None and await secret.reveal() == "new-one"


async def test_the_mask_is_not_a_secret_where_there_was_none(registry: Registry) -> None:
    result = await set_ok(
        registry,
        "MtaRoute",
        create={"r": {**RELAY, "authSecret": {"@type": "File", "filePath": "/run/pw"}}},
    )
    relay_id = result["created"]["r"]["id"]
    failed = await registry.set(
        "MtaRoute",
        if_in_state=None,
        create=None,
        update={relay_id: {"authSecret": MASKED}},
        destroy=None,
    )
    assert failed["notUpdated"][relay_id]["properties"] == ["authSecret"]


async def test_secrets_from_the_environment_and_files(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "relay.pw"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("RELAY_PASSWORD", "from-the-env")
    await set_ok(
        registry,
        "MtaRoute",
        create={
            "env": {
                **RELAY,
                "name": "env",
                "authSecret": {"@type": "EnvironmentVariable", "variableName": "RELAY_PASSWORD"},
            },
            "file": {
                **RELAY,
                "name": "file",
                "authSecret": {"@type": "File", "filePath": str(secret_file)},
            },
            "gone": {
                **RELAY,
                "name": "gone",
                "authSecret": {"@type": "File", "filePath": str(tmp_path / "no")},
            },
        },
    )
    got = await registry.get("MtaRoute", ids=None, properties=["name", "authSecret"])
    by_name = {o["name"]: o.get("authSecret") for o in got["list"]}
    assert by_name["env"] == {"@type": "EnvironmentVariable", "variableName": "RELAY_PASSWORD"}
    snap = registry.snapshot()
    for name, expected in [("env", "from-the-env"), ("file", "from-a-file")]:
        secret = getattr(snap.route(name), "auth_secret", None)
        assert secret is not None and await secret.reveal() == expected
    gone = getattr(snap.route("gone"), "auth_secret", None)
    assert gone is not None
    with pytest.raises(ConfigError):
        await gone.reveal()
