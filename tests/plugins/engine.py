"""Engine fixtures: the delivery engine running against a harness lab (register as a plugin).

``make_snapshot`` builds the registry snapshot the engine reads, from the first-start objects
plus any given, without a database (for the planner's tables).

``make_engine`` starts a whole engine world for one test, over real sockets:

    world = await make_engine(lab)              # a started harness Lab
    await world.set_schedule("remote", retry=[1000])
    message_id = await world.send("a@sender.test", ["b@plain.test"])
    settled = await world.worker.wait_settled(1)

An `EngineWorld` holds the settings pointing at the lab (hostname ``mta.engine.test``), a
`Registry` and a SQLite queue store on one database file under the test's folder, a DNS
resolver on the lab's DNS server and a running `Worker` (polling every
`TEST_POLL_INTERVAL_MS`). Schedules ``remote`` and ``dsn`` retry every second in tests, so
retries happen within a test's time; everything is stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from delivery import config, expr
from delivery.dns import resolver as dns_resolver
from delivery.engine import attempt, intake, worker
from delivery.harness import lab as harness_lab
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from delivery.registry import Registry, defaults
from delivery.registry.snapshot import Snapshot, build_snapshot

__all__ = ["EngineWorld", "make_engine", "make_snapshot"]

TEST_HOSTNAME = "mta.engine.test"
TEST_POLL_INTERVAL_MS = 200
TEST_RETRY_MS = 1000  # `remote` and `dsn` retry every second in tests
TEST_DNS_TIMEOUT_MS = 1000
BODY = (
    b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: test\r\n"
    b"Message-ID: <t1@sender.test>\r\n\r\nhello\r\n"
)


MakeEngine = Callable[..., Awaitable["EngineWorld"]]
"""The type of the `make_engine` fixture."""


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


@dataclass
class EngineWorld:
    """A running engine pointed at a harness lab (see the module docstring)."""

    lab: harness_lab.Lab
    settings: config.Settings
    registry: Registry
    store: SqliteQueueStore
    resolver: dns_resolver.Resolver
    worker: worker.Worker
    sent: list[str] = field(default_factory=list)

    async def set(self, type_name: str, **changes: Any) -> dict[str, Any]:
        """A registry /set that must succeed (``create=``, ``update=``, ``destroy=``)."""
        result = await self.registry.set(
            type_name,
            if_in_state=None,
            create=changes.get("create"),
            update=changes.get("update"),
            destroy=changes.get("destroy"),
        )
        for member in ("notCreated", "notUpdated", "notDestroyed"):
            assert result[member] is None, result[member]
        return result

    async def id_of(self, type_name: str, name: str) -> str:
        """The id of the object called ``name``."""
        got = await self.registry.get(type_name, ids=None, properties=["name"])
        return next(str(o["id"]) for o in got["list"] if o["name"] == name)

    async def update(self, type_name: str, name: str, **properties: Any) -> None:
        """Update the object called ``name`` (wire property names)."""
        object_id = await self.id_of(type_name, name)
        await self.set(type_name, update={object_id: properties})

    async def create(self, type_name: str, **properties: Any) -> None:
        """Create an object (wire property names; ``type_`` for ``@type``)."""
        if "type_" in properties:
            properties["@type"] = properties.pop("type_")
        await self.set(type_name, create={"new": properties})

    async def outbound(self, **expressions: Any) -> None:
        """Set MtaOutboundStrategy expressions, e.g. ``tls={"else": "'strict'"}``."""
        await self.set("MtaOutboundStrategy", update={"singleton": expressions})

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes = BODY,
        *,
        notify: frozenset[model.Notify] = frozenset(),
        orcpt: str | None = None,
        **message: Any,
    ) -> str:
        """Queue a message as the submitter would (schedule from the `schedule` expression)."""
        now = model.now_ms()
        new = model.NewMessage(
            sender=sender,
            body=body,
            source=message.pop("source", model.MessageSource.AUTHENTICATED),
            received_at=now,
            **message,
        )
        queued = await intake.plan_recipients(
            self.registry.snapshot(),
            new,
            [intake.RecipientRequest(address, notify, orcpt) for address in recipients],
            env=expr.Environment(local_domains=frozenset(self.settings.local.domains)),
            lookup=attempt.make_lookup(self.resolver),
            now=now,
        )
        message_id = await self.store.enqueue(new, queued)
        self.sent.append(message_id)
        self.worker.wake()
        return message_id

    async def recipients(self, message_id: str) -> list[model.QueuedRecipient]:
        """The message's recipients as stored now."""
        found = await self.store.get_message(message_id)
        assert found is not None
        return list(found.recipients)


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[EngineWorld]]]:
    """A factory of running engine worlds (see the module docstring); all stopped after."""
    worlds: list[EngineWorld] = []

    async def make(
        lab: harness_lab.Lab,
        *,
        local_domains: Sequence[str] = (),
        attempt_timeout_ms: int = 30_000,
        start: bool = True,
        owner: str | None = None,
        grace_ms: int = 2000,
        hostname: str = TEST_HOSTNAME,
    ) -> EngineWorld:
        folder = tmp_path / f"engine{len(worlds)}"
        settings = config.Settings.model_validate(
            {
                "hostname": hostname,
                "store": {"url": f"sqlite://{folder}/delivery.db"},
                "local": {"domains": list(local_domains)},
                **lab.settings(),
                "dns": {**lab.settings()["dns"], "timeout": TEST_DNS_TIMEOUT_MS},
            }
        )
        registry = await Registry.open(settings.store.url)
        store = await SqliteQueueStore.open(config.sqlite_path(settings.store.url))
        resolver = dns_resolver.Resolver(
            settings.dns.servers(), timeout_ms=settings.dns.timeout_ms, trust_ad=True
        )
        engine = worker.Worker(
            settings,
            registry,
            store,
            resolver,
            owner=owner or f"test-{len(worlds)}",
            poll_interval_ms=TEST_POLL_INTERVAL_MS,
            attempt_timeout_ms=attempt_timeout_ms,
            grace_ms=grace_ms,
        )
        world = EngineWorld(lab, settings, registry, store, resolver, engine)
        worlds.append(world)
        for schedule in ("remote", "dsn"):
            await world.update("MtaDeliverySchedule", schedule, retry=[TEST_RETRY_MS])
        if start:
            await engine.start()
        return world

    try:
        yield make
    finally:
        for world in reversed(worlds):
            await world.worker.stop()
            await world.resolver.close()
            await world.store.close()
            await world.registry.close()
