"""Decide one create, update or destroy of a /set against the current objects. Pure: no I/O.

The service (service.py) runs these in order for every item of a call, feeding each decision
the objects as earlier successful items left them, and writes the accepted ones in one
transaction. Rules, beyond the schema (schema.py):

- ``id`` is set by the server: refused on create, and on update unless it is unchanged.
- ``name`` is required, unique per type regardless of case (``alreadyExists`` with the
  ``existingId``), and immutable: an update may repeat it, never change it.
- Changing a route's ``@type`` starts the object afresh from its name and description, so the
  old variant's properties do not linger; give the new variant's properties in the same patch.
- A schedule's ``queue`` must name an existing MtaVirtualQueue when it is set, and a virtual
  queue that a schedule names cannot be destroyed (``objectIsLinked``).
- The singleton has no create or destroy (SetError ``singleton``) and its expressions must
  compile (expressions.py).
- A Relay's ``authSecret`` of ``@type`` Value is answered masked (``SECRET_MASK``); sending the
  mask back unchanged in an update keeps the stored secret, so a client can round-trip a /get.

Outcomes:
    decide_create / decide_update -> Accepted(data, answer) or SetError
    decide_destroy -> None (accepted) or SetError

Limits: MAX_OBJECTS_PER_TYPE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from delivery.registry import patch, schema, validation
from delivery.registry.errors import SetError
from delivery.registry.expressions import compile_outbound
from delivery.registry.schema import ObjectSpec

__all__ = [
    "MAX_OBJECTS_PER_TYPE",
    "SECRET_MASK",
    "Accepted",
    "decide_create",
    "decide_destroy",
    "decide_update",
    "mask_secrets",
]

MAX_OBJECTS_PER_TYPE: Final = 1000
"""Objects of one type: every object is in each engine snapshot and scanned by /query, so
this keeps both cheap. Real configurations have a handful."""

SECRET_MASK: Final = "********"
"""What /get shows in place of a Relay's authSecret of @type Value."""

_COMMON: Final = ("name", "description")
"""Properties every collection variant has: kept when a route changes its @type."""

Objects = Mapping[str, Mapping[str, Any]]
"""Object id -> stored wire object (without ``id``), in creation order."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """An item that may be written.

    :param data: the complete wire object to store, without ``id``.
    :param answer: what the /set response lists for the item: for a create, the properties
        the server set or changed (RFC 8620 §5.3 ``created``); for an update, those it set
        differently from the patch, or None.
    """

    data: dict[str, Any]
    answer: dict[str, Any] | None


def decide_create(
    spec: ObjectSpec,
    data: Mapping[str, Any],
    /,
    *,
    existing: Objects,
    world: Mapping[str, Objects],
) -> Accepted | SetError:
    """Decide a create of ``data`` among the ``existing`` objects of its type.

    :param world: type name -> objects, for references between types.
    """
    if spec.singleton:
        return SetError("singleton", f"{spec.name} is a singleton: it cannot be created")
    if len(existing) >= MAX_OBJECTS_PER_TYPE:
        return SetError(
            "overQuota", f"at most {MAX_OBJECTS_PER_TYPE} {spec.name} objects can exist"
        )
    if "id" in data:
        return validation.invalid([("id", "is set by the server; leave it out")])
    if _masked(data.get("authSecret")):
        return validation.invalid([("authSecret/secret", _MASK_GIVEN)])
    checked = _check(spec, data, existing=existing, world=world, object_id=None, queue=True)
    if isinstance(checked, SetError):
        return checked
    return Accepted(checked, _server_set(data, checked) or {})


def decide_update(
    spec: ObjectSpec,
    object_id: str,
    current: Mapping[str, Any],
    changes: Mapping[str, Any],
    /,
    *,
    existing: Objects,
    world: Mapping[str, Objects],
) -> Accepted | SetError:
    """Decide an update of object ``object_id`` (stored as ``current``) by a PatchObject."""
    roots = set()
    for key in changes:
        segments = patch.parse_pointer(key)
        if segments is None:
            return SetError("invalidPatch", f"{key!r} is not a valid JSON pointer")
        roots.add(segments[0])
    unknown = sorted(roots - spec.properties)
    if unknown:
        return validation.invalid([(name, "unknown property") for name in unknown])
    if "id" in changes:
        if changes["id"] != object_id:
            return validation.invalid([("id", "is set by the server and cannot change")])
        changes = {k: v for k, v in changes.items() if k != "id"}
    if "name" in changes and changes["name"] != current.get("name"):
        return validation.invalid(
            [("name", f"cannot change (it is {current.get('name')!r}); create a new object")]
        )
    base: Mapping[str, Any] = current
    if spec.tagged and "@type" in changes and changes["@type"] != current.get("@type"):
        base = {key: current[key] for key in _COMMON if key in current}
    patched = patch.apply_patch(base, changes)
    if isinstance(patched, SetError):
        return patched
    secret = patched.get("authSecret")
    if _masked(secret):
        stored = current.get("authSecret")
        if not isinstance(stored, Mapping) or stored.get("@type") != "Value":
            return validation.invalid([("authSecret/secret", _MASK_GIVEN)])
        patched["authSecret"] = {**secret, "secret": stored["secret"]}
    checked = _check(
        spec,
        patched,
        existing=existing,
        world=world,
        object_id=object_id,
        queue="queue" in roots,
    )
    if isinstance(checked, SetError):
        return checked
    return Accepted(checked, _server_set(patched, checked))


def decide_destroy(
    spec: ObjectSpec,
    object_id: str,
    /,
    *,
    existing: Objects,
    world: Mapping[str, Objects],
) -> SetError | None:
    """Decide a destroy of ``object_id``; None means it may go."""
    if spec.singleton:
        return SetError("singleton", f"{spec.name} is a singleton: it cannot be destroyed")
    current = existing.get(object_id)
    if current is None:
        return SetError("notFound", f"no {spec.name} with id {object_id!r}")
    if spec.name == "MtaVirtualQueue":
        name = str(current.get("name", "")).lower()
        users = [
            (schedule_id, str(schedule.get("name")))
            for schedule_id, schedule in world.get("MtaDeliverySchedule", {}).items()
            if str(schedule.get("queue", "")).lower() == name
        ]
        if users:
            names = ", ".join(repr(n) for _, n in users)
            return SetError(
                "objectIsLinked",
                f"MtaDeliverySchedule {names} deliver through this queue; point them at another "
                "queue first",
                extra={"linkedIds": [schedule_id for schedule_id, _ in users]},
            )
    return None


def mask_secrets(data: Mapping[str, Any], /) -> dict[str, Any]:
    """``data`` with a Value authSecret's secret replaced by SECRET_MASK."""
    out = dict(data)
    secret = out.get("authSecret")
    if isinstance(secret, Mapping) and secret.get("@type") == "Value":
        out["authSecret"] = {**secret, "secret": SECRET_MASK}
    return out


_MASK_GIVEN = f"{SECRET_MASK!r} is the mask /get shows, not a secret: give the secret itself"


def _masked(secret: Any) -> TypeGuard[Mapping[str, Any]]:
    return (
        isinstance(secret, Mapping)
        and secret.get("@type") == "Value"
        and secret.get("secret") == SECRET_MASK
    )


def _check(
    spec: ObjectSpec,
    data: Mapping[str, Any],
    *,
    existing: Objects,
    world: Mapping[str, Objects],
    object_id: str | None,
    queue: bool,
) -> dict[str, Any] | SetError:
    """Validate the whole object, then the rules that span objects."""
    model = validation.validate(spec, data)
    if isinstance(model, SetError):
        return model
    if isinstance(model, schema.OutboundStrategyModel):
        compiled = compile_outbound(model)
        if isinstance(compiled, SetError):
            return compiled
    if isinstance(model, schema.NamedModel):
        clash = _named(existing.items(), model.name, besides=object_id)
        if clash is not None:
            clash_id, clash_name = clash
            return SetError(
                "alreadyExists",
                f"{spec.name} {clash_name!r} already exists (names ignore case)",
                extra={"existingId": clash_id},
            )
    if queue and isinstance(model, schema.DeliveryScheduleModel):
        queues = world.get("MtaVirtualQueue", {})
        if _named(queues.items(), model.queue, besides=None) is None:
            return validation.invalid(
                [("queue", f"no MtaVirtualQueue is named {model.queue!r}; create it first")]
            )
    return model.to_wire()


def _named(
    objects: Iterable[tuple[str, Mapping[str, Any]]], name: str, *, besides: str | None
) -> tuple[str, str] | None:
    """(id, name) of the object named ``name`` regardless of case, other than ``besides``."""
    wanted = name.lower()
    for object_id, data in objects:
        other = data.get("name")
        if object_id != besides and isinstance(other, str) and other.lower() == wanted:
            return object_id, other
    return None


def _server_set(sent: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored properties whose value differs from what the client sent or implied."""
    answer = {k: v for k, v in stored.items() if k not in sent or sent[k] != v}
    return mask_secrets(answer) if answer else None
