"""The registry service: JMAP /get, /set and /query over the managed objects, and the engine
snapshot. The API layer calls it; nothing else writes managed objects.

Objects live in the store (store.py); every call reads them inside one transaction, so
several processes may share a database. Each /set is one write transaction: items are
decided one by one, creates, then updates, then destroys (RFC 8620 §5.3), each seeing what
the earlier successful items left; a refused item changes nothing, and the successful ones
are committed together. After a /set that changed something, the snapshot is rebuilt.

Several nodes:
    Every node opens its own Registry on the shared database (SQLite file or PostgreSQL).
    A /set moves its type's state counter in its own transaction; each registry reads the
    counters every ``refresh_interval_ms`` (`REFRESH_INTERVAL_MS`) and rebuilds its snapshot
    when one moved (`refresh`). So a change made through any node's API reaches the engine of
    every node within about a second; /get, /set and /query read the database and are current
    at once everywhere.

Ids and states:
    Ids are the numbers of a store-wide sequence that only moves forward, written in
    lowercase base 32 (``b``, ``c``, ... ``9``, ``ba``, ...): short, opaque, never reused,
    even after the object is destroyed. The singleton's id is ``singleton``. A type's state
    string is its change counter; it moves on every /set that changed an object of the type.

Outcomes:
    get/set/query return the RFC 8620 response objects without ``accountId``; per-item
    failures are SetErrors inside the /set response (changes.py). A MethodError
    (unknownMethod, invalidArguments, stateMismatch, unsupportedFilter, unsupportedSort) stops
    the call; a StoreError is the database failing.

Security:
    A Relay's secret never leaves through /get or /set responses (changes.SECRET_MASK). The
    caller checks the permission of the method; ``allowed`` lets it refuse single items.

Standards: RFC 8620 §5.1 (/get), §5.3 (/set), §5.5 (/query).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

from delivery import config, pg
from delivery.errors import ConfigError
from delivery.registry import changes, defaults, postgres, query, schema, sqlite, validation
from delivery.registry.errors import MethodError, SetError, StoreError
from delivery.registry.schema import SINGLETON_ID, ObjectSpec
from delivery.registry.snapshot import Snapshot, build_snapshot
from delivery.registry.store import SCHEMA_VERSION, Reader, Store, StoredObject, Writer

__all__ = ["REFRESH_INTERVAL_MS", "Registry", "format_id", "format_state"]

log = logging.getLogger("delivery.registry")

REFRESH_INTERVAL_MS: Final = 1000
"""How often a registry looks for changes other nodes made: the longest a change takes to
reach every node's engine. One read of a few rows per second and node costs nothing."""

_ID_ALPHABET: Final = "abcdefghjkmnpqrstvwxyz0123456789"
"""Base 32 without i, l, o, u (Crockford's choice: no look-alikes), letters first."""


def format_id(seq: int, /) -> str:
    """The id of the object numbered ``seq``.

    >>> format_id(1), format_id(31), format_id(32), format_id(1000)
    ('b', '9', 'ba', '9j')
    """
    digits = []
    while True:
        seq, digit = divmod(seq, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
        if not seq:
            return "".join(reversed(digits))


def format_state(counter: int, /) -> str:
    """The state string of a type's change counter."""
    return str(counter)


class Registry:
    """The managed objects (DESIGN §3). Make one with ``await Registry.open(url)``."""

    object_types: Final[tuple[str, ...]] = tuple(spec.name for spec in schema.OBJECT_TYPES)
    """Every managed object type name, e.g. ``MtaTlsStrategy``."""

    def __init__(self, store: Store, snapshot: Snapshot, /) -> None:
        self._store = store
        self._snapshot = snapshot
        # Held from a /set's transaction (or a refresh's read) until its snapshot is in
        # place, so that snapshots are installed in commit order.
        self._write_lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, /, *, refresh_interval_ms: int | None = REFRESH_INTERVAL_MS
    ) -> Registry:
        """Open the store at ``url``; a new store gets the first-start objects.

        :param url: ``sqlite://<file path>`` (``sqlite:///var/lib/delivery/delivery.db``;
            the folder is created when missing) or ``postgresql://...`` (`delivery.pg`).
        :param refresh_interval_ms: how often to look for changes made by other registries
            on the same database (see Several nodes); None: never (`refresh` still works).
        :raises ConfigError: the URL is not one this registry can use.
        :raises StoreError: the database cannot be opened or initialised.
        """
        store = await _open_store(url)
        try:
            async with store.write() as writer:
                await _initialise(writer)
            snapshot = await _load_snapshot(store)
        except BaseException:
            await store.close()
            raise
        registry = cls(store, snapshot)
        if refresh_interval_ms is not None:
            registry._refresher = asyncio.create_task(
                registry._refresh_every(refresh_interval_ms / 1000), name="registry refresh"
            )
        return registry

    async def close(self) -> None:
        """Stop refreshing and close the store; the registry is unusable afterwards."""
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.wait([refresher])
        await self._store.close()

    async def refresh(self) -> bool:
        """refresh - rebuild the snapshot if objects changed since it was built (by another
        registry on the same database: this one's own /set rebuilds it at once).

        :returns: True when a new snapshot is in place.
        :raises StoreError: the database cannot be read (the snapshot stays as it was).
        """
        async with self._write_lock:
            async with self._store.read() as reader:
                counters = await reader.states()
            seen = self._snapshot.states
            moved = [
                name
                for name in self.object_types
                if format_state(counters.get(name, 0)) != seen.get(name)
            ]
            if not moved:
                return False
            self._snapshot = await _load_snapshot(self._store)
        log.info("managed objects changed on another node (%s): snapshot rebuilt", ", ".join(moved))
        return True

    async def _refresh_every(self, interval_s: float) -> None:
        """`refresh` every ``interval_s``; an outage is logged when it starts and ends."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except StoreError as exc:
                if not failing:
                    log.warning("cannot look for changes of managed objects: %s", exc)
                failing = True
                continue
            except Exception:  # the refresh must outlive any one bug: log, wait, go on
                if not failing:
                    log.exception("cannot look for changes of managed objects")
                failing = True
                continue
            if failing:
                log.warning("managed objects are read again: changes from other nodes apply")
            failing = False

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def snapshot(self) -> Snapshot:
        """The current engine snapshot: immutable, rebuilt after each /set that changed
        something."""
        return self._snapshot

    async def get(
        self, type_name: str, /, *, ids: list[str] | None, properties: list[str] | None
    ) -> dict[str, Any]:
        """RFC 8620 /get: ``{"state", "list", "notFound"}``.

        :param ids: the ids to return; None for every object (for a singleton, None or
            ``["singleton"]``). Duplicates are answered once.
        :param properties: the properties to return (``id`` always is); None for all.
        :raises MethodError: unknownMethod for an unknown type, invalidArguments for an
            unknown property.
        """
        spec = _spec(type_name)
        if properties is not None:
            unknown = [p for p in properties if p not in spec.properties]
            if unknown:
                raise MethodError("invalidArguments", f"{type_name} has no property {unknown[0]!r}")
        async with self._store.read() as reader:
            state = await reader.state(spec.name)
            by_id = await _objects(reader, spec)
        wanted = list(by_id) if ids is None else list(dict.fromkeys(ids))
        return {
            "state": format_state(state),
            "list": [_present(i, by_id[i], properties) for i in wanted if i in by_id],
            "notFound": [i for i in wanted if i not in by_id],
        }

    async def set(
        self,
        type_name: str,
        /,
        *,
        if_in_state: str | None,
        create: dict[str, Any] | None,
        update: dict[str, Any] | None,
        destroy: list[str] | None,
        allowed: Callable[[str], bool] = lambda op: True,
    ) -> dict[str, Any]:
        """RFC 8620 /set: ``oldState``, ``newState``, ``created``, ``updated``, ``destroyed``,
        ``notCreated``, ``notUpdated``, ``notDestroyed`` (null when empty).

        :param if_in_state: refuse the whole call unless the type's state is this.
        :param create: creation id -> wire object.
        :param update: id (or ``#creationId`` of this call) -> PatchObject.
        :param destroy: ids (or ``#creationId``) to destroy.
        :param allowed: called with "create", "update" or "destroy" per item; False refuses
            that item with SetError ``forbidden``.
        :raises MethodError: unknownMethod, stateMismatch.

        A call runs to its end once started, even if the caller is cancelled: a /set is never
        left half-applied in memory.
        """
        spec = _spec(type_name)
        return await asyncio.shield(
            self._set(spec, if_in_state, create or {}, update or {}, destroy or [], allowed)
        )

    async def query(
        self,
        type_name: str,
        /,
        *,
        filter: Mapping[str, Any] | None,
        sort: list[Mapping[str, Any]] | None,
        position: int = 0,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """RFC 8620 /query: ``{"queryState", "canCalculateChanges", "position", "ids",
        "total"}``; see query.py for filters and sorting.

        :raises MethodError: unknownMethod, unsupportedFilter, unsupportedSort,
            invalidArguments.
        """
        spec = _spec(type_name)
        if spec.singleton and filter:
            raise MethodError(
                "unsupportedFilter", f"{type_name} is a singleton: it has no filter conditions"
            )
        async with self._store.read() as reader:
            state = await reader.state(spec.name)
            stored = await reader.objects(spec.name)
        rows = [query.Row(o.id, o.seq, str(o.data.get("name", ""))) for o in stored]
        if spec.singleton:
            rows = [query.Row(SINGLETON_ID, 0, "")]
        result = query.run_query(rows, filter=filter, sort=sort, position=position, limit=limit)
        return {
            "queryState": format_state(state),
            "canCalculateChanges": False,
            "position": result.position,
            "ids": result.ids,
            "total": result.total,
        }

    async def get_meta(self, key: str, /) -> str | None:
        """A value of the registry's key/value table, or None."""
        async with self._store.read() as reader:
            return await reader.get_meta(key)

    async def set_meta(self, key: str, value: str, /) -> None:
        """Set a value of the registry's key/value table (durably, like a /set)."""
        await asyncio.shield(self._set_meta(key, value))

    async def _set_meta(self, key: str, value: str) -> None:
        async with self._store.write() as writer:
            await writer.set_meta(key, value)

    async def _set(
        self,
        spec: ObjectSpec,
        if_in_state: str | None,
        create: Mapping[str, Any],
        update: Mapping[str, Any],
        destroy: list[str],
        allowed: Callable[[str], bool],
    ) -> dict[str, Any]:
        async with self._write_lock:
            async with self._store.write() as writer:
                old_state = format_state(await writer.state(spec.name))
                if if_in_state is not None and if_in_state != old_state:
                    raise MethodError(
                        "stateMismatch",
                        f"{spec.name} is in state {old_state!r}, not {if_in_state!r}",
                    )
                world = {s.name: await _objects(writer, s) for s in schema.OBJECT_TYPES}
                run = _SetRun(spec, writer, world, allowed)
                await run.create(create)
                await run.update(update)
                await run.destroy(destroy)
                new_state = (
                    format_state(await writer.bump_state(spec.name)) if run.changed else old_state
                )
            if run.changed:
                self._snapshot = await _load_snapshot(self._store)
        return {"oldState": old_state, "newState": new_state, **run.response()}


class _SetRun:
    """The items of one /set, decided in order and written through one Writer."""

    def __init__(
        self,
        spec: ObjectSpec,
        writer: Writer,
        world: dict[str, dict[str, dict[str, Any]]],
        allowed: Callable[[str], bool],
    ) -> None:
        self.spec = spec
        self.writer = writer
        self.world = world
        self.existing = world[spec.name]  # updated as items succeed
        self.allowed = allowed
        self.creation_ids: dict[str, str] = {}
        self.changed = False
        self.created: dict[str, Any] = {}
        self.updated: dict[str, Any] = {}
        self.destroyed: list[str] = []
        self.not_created: dict[str, Any] = {}
        self.not_updated: dict[str, Any] = {}
        self.not_destroyed: dict[str, Any] = {}

    async def create(self, items: Mapping[str, Any]) -> None:
        for creation_id, data in items.items():
            outcome: changes.Accepted | SetError
            if not self.allowed("create"):
                outcome = _FORBIDDEN
            elif not isinstance(data, Mapping):
                outcome = SetError("invalidProperties", "an object to create must be a JSON object")
            else:
                outcome = changes.decide_create(
                    self.spec, data, existing=self.existing, world=self.world
                )
            if isinstance(outcome, SetError):
                self.not_created[creation_id] = outcome.to_json()
                continue
            seq = await self.writer.next_seq()
            object_id = format_id(seq)
            name = outcome.data.get("name")
            await self.writer.insert(
                self.spec.name,
                StoredObject(object_id, seq, outcome.data),
                name.lower() if isinstance(name, str) else None,
            )
            self.existing[object_id] = outcome.data
            self.creation_ids[creation_id] = object_id
            self.created[creation_id] = {"id": object_id, **(outcome.answer or {})}
            self.changed = True

    async def update(self, items: Mapping[str, Any]) -> None:
        for given_id, patch in items.items():
            object_id = self._resolve(given_id)
            current = self.existing.get(object_id)
            outcome: changes.Accepted | SetError
            if not self.allowed("update"):
                outcome = _FORBIDDEN
            elif current is None:
                outcome = SetError("notFound", f"no {self.spec.name} with id {given_id!r}")
            elif not isinstance(patch, Mapping):
                outcome = SetError("invalidPatch", "a patch must be a JSON object")
            else:
                outcome = changes.decide_update(
                    self.spec, object_id, current, patch, existing=self.existing, world=self.world
                )
            if isinstance(outcome, SetError):
                self.not_updated[given_id] = outcome.to_json()
                continue
            stored = StoredObject(object_id, 0, outcome.data)
            if self.spec.singleton and not await self.writer.objects(self.spec.name):
                await self.writer.insert(self.spec.name, stored, None)
            else:
                await self.writer.replace(self.spec.name, stored)
            self.existing[object_id] = outcome.data
            self.updated[object_id] = outcome.answer
            self.changed = True

    async def destroy(self, ids: list[str]) -> None:
        for given_id in ids:
            object_id = self._resolve(given_id)
            refusal = (
                changes.decide_destroy(
                    self.spec, object_id, existing=self.existing, world=self.world
                )
                if self.allowed("destroy")
                else _FORBIDDEN
            )
            if refusal is not None:
                self.not_destroyed[given_id] = refusal.to_json()
                continue
            await self.writer.delete(self.spec.name, object_id)
            del self.existing[object_id]
            self.destroyed.append(object_id)
            self.changed = True

    def response(self) -> dict[str, Any]:
        """The per-item members of the /set response; null when empty (RFC 8620 §5.3)."""
        return {
            "created": self.created or None,
            "updated": self.updated or None,
            "destroyed": self.destroyed or None,
            "notCreated": self.not_created or None,
            "notUpdated": self.not_updated or None,
            "notDestroyed": self.not_destroyed or None,
        }

    def _resolve(self, given_id: str) -> str:
        """An id, or for ``#creationId`` the id created for it earlier in this call."""
        if given_id.startswith("#"):
            return self.creation_ids.get(given_id[1:], given_id)
        return given_id


_FORBIDDEN: Final = SetError("forbidden", "this token lacks the permission for this operation")


def _spec(type_name: str) -> ObjectSpec:
    spec = schema.spec_of(type_name)
    if spec is None:
        raise MethodError("unknownMethod", f"{type_name!r} is not a managed object type")
    return spec


async def _objects(reader: Reader, spec: ObjectSpec) -> dict[str, dict[str, Any]]:
    """id -> wire object of a type; a singleton always has its one object."""
    stored = {o.id: o.data for o in await reader.objects(spec.name)}
    if spec.singleton and SINGLETON_ID not in stored:
        stored[SINGLETON_ID] = schema.OutboundStrategyModel().to_wire()
    return stored


def _present(
    object_id: str, data: Mapping[str, Any], properties: list[str] | None
) -> dict[str, Any]:
    """An object as /get returns it: ``id`` and ``@type`` first, the secret masked."""
    masked = changes.mask_secrets(data)
    out: dict[str, Any] = {"id": object_id}
    if "@type" in masked:
        out["@type"] = masked["@type"]
    out.update(masked)
    if properties is not None:
        keep = {"id", *properties}
        out = {k: v for k, v in out.items() if k in keep}
    return out


async def _open_store(url: str) -> Store:
    if url.startswith(config.SQLITE_SCHEME):
        path = config.sqlite_path(url)
        if not path.name:
            raise ConfigError("store.url", f"{url!r} names no database file")
        return await sqlite.open_store(path)
    if pg.is_postgres_url(url):
        return await postgres.open_store(url)
    raise ConfigError(
        "store.url", f"{pg.describe(url)!r} is not a sqlite:// or postgresql:// store URL"
    )


async def _initialise(writer: Writer) -> None:
    """Create the first-start objects (DESIGN §3) when the store is new."""
    version = await writer.schema_version()
    if version is not None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the registry tables are at schema version {version}, newer than this "
                f"delivery understands ({SCHEMA_VERSION}): upgrade delivery"
            )
        return
    singleton = schema.OutboundStrategyModel().to_wire()
    await writer.insert(
        "MtaOutboundStrategy",
        StoredObject(SINGLETON_ID, await writer.next_seq(), singleton),
        None,
    )
    for type_name, raw in defaults.FIRST_START_OBJECTS:
        spec = _spec(type_name)
        model = validation.validate(spec, raw)
        if isinstance(model, SetError):  # the defaults are tested to validate
            raise AssertionError(f"{type_name} default: {model.description}")
        data = model.to_wire()
        seq = await writer.next_seq()
        await writer.insert(
            type_name, StoredObject(format_id(seq), seq, data), data["name"].lower()
        )
    await writer.set_schema_version(SCHEMA_VERSION)


async def _load_snapshot(store: Store) -> Snapshot:
    async with store.read() as reader:
        states = {}
        records = {}
        for spec in schema.OBJECT_TYPES:
            states[spec.name] = format_state(await reader.state(spec.name))
            records[spec.name] = list((await _objects(reader, spec)).items())
    return build_snapshot(records, states)
