"""The form fields of a managed object, derived from its wire schema (registry/schema.py).

One generic form serves every collection (TLS strategies, routes, connection strategies,
delivery schedules, virtual queues): `fields_of(model)` reads the pydantic model and says,
for each wire property, what kind of input it needs. Adding a property to the schema adds it
to the form; nothing here repeats a default, a limit or an enum.

Kinds:
    text       a string; ``nullable`` when it may be null (blank = null)
    bool       a checkbox
    choice     one of ``choices`` (a Literal)
    duration   milliseconds on the wire, "5m" in the form (delivery.durations)
    integer    an integer between ``minimum`` and ``maximum`` when known
    durations  a list of durations, written "2m, 5m, 10m"
    rows       a list of objects (``children`` per row), e.g. sourceIps
    variants   one of several objects told apart by ``@type`` (``variants``), e.g. expiry;
               ``nullable`` when it may be absent (authSecret)

Outcomes: fields_of(model) -> tuple[Field, ...]; a type the form cannot show raises TypeError
at import of the admin (a schema change that needs a new kind is found by the tests at once).

Limits: none.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from delivery.registry import schema

__all__ = ["Field", "Kind", "Variant", "fields_of", "label_of", "variant_tag"]

Kind = Literal["text", "bool", "choice", "duration", "integer", "durations", "rows", "variants"]

TAG: Final = "@type"
"""The wire property that selects a variant."""

_DURATION_VALIDATOR: Final = typing.get_args(schema.Duration)[1]
"""The marker of a Duration field: the schema's own validator object."""

_WORDS: Final = {
    "mta": "MTA",
    "sts": "STS",
    "tls": "TLS",
    "dane": "DANE",
    "ehlo": "EHLO",
    "ip": "IP",
    "ips": "IPs",
    "mx": "MX",
    "smtp": "SMTP",
    "lmtp": "LMTP",
    "rcpt": "RCPT",
}
"""Words written as acronyms in labels."""


def label_of(prop: str, /) -> str:
    """A human label for a camelCase wire property.

    >>> label_of("mtaStsTimeout"), label_of("allowInvalidCerts"), label_of("sourceIps")
    ('MTA-STS timeout', 'Allow invalid certs', 'Source IPs')
    """
    words: list[str] = []
    current = ""
    for char in prop:
        if char.isupper() and current:
            words.append(current)
            current = char.lower()
        else:
            current += char.lower()
    words.append(current)
    shown = [_WORDS.get(word, word) for word in words]
    text = " ".join(shown).replace("MTA STS", "MTA-STS")
    return text[0].upper() + text[1:]


@dataclass(frozen=True, slots=True)
class Variant:
    """One ``@type`` of a variants field, and the fields it adds."""

    tag: str
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Field:
    """One wire property as a form input.

    :ivar prop: the wire name (``mtaStsTimeout``).
    :ivar default: the wire default, or None when there is none (then ``required`` or
        ``nullable``).
    :ivar minimum: the smallest integer allowed (integer kind), when the schema says.
    """

    prop: str
    label: str
    kind: Kind
    required: bool = False
    nullable: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    children: tuple[Field, ...] = ()
    variants: tuple[Variant, ...] = ()

    @property
    def immutable(self) -> bool:
        """``name`` never changes once created (DESIGN §3)."""
        return self.prop == "name"


def variant_tag(model: type[BaseModel], /) -> str | None:
    """The ``@type`` value of a variant model, or None for an untagged model."""
    info = model.model_fields.get("type_")
    if info is None:
        return None
    (tag,) = typing.get_args(info.annotation)
    return str(tag)


def fields_of(model: type[BaseModel], /) -> tuple[Field, ...]:
    """The form fields of ``model`` in schema order; ``@type`` is not one of them."""
    out: list[Field] = []
    for key, info in model.model_fields.items():
        prop = info.alias or key
        if prop == TAG:
            continue
        out.append(_field(prop, info))
    return tuple(out)


def _default(info: FieldInfo) -> Any:
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """(the bare type, all metadata, nullable) of an annotation."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            base, *extra = typing.get_args(annotation)
            for item in extra:
                metadata = [*metadata, *(item.metadata if isinstance(item, FieldInfo) else [item])]
            annotation = base
            continue
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(annotation)
            if type(None) in args:
                nullable = True
                rest = tuple(a for a in args if a is not type(None))
                annotation = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
                continue
        return annotation, metadata, nullable


def _field(prop: str, info: FieldInfo) -> Field:
    annotation, metadata, nullable = _unwrap(info.annotation, list(info.metadata))
    common: dict[str, Any] = {
        "prop": prop,
        "label": label_of(prop),
        "required": info.is_required(),
        "nullable": nullable,
        "default": _default(info),
    }
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return Field(kind="bool", **common)
    if origin is Literal:
        return Field(kind="choice", choices=tuple(map(str, typing.get_args(annotation))), **common)
    if annotation is int:
        if _DURATION_VALIDATOR in metadata:
            return Field(kind="duration", **common)
        return Field(
            kind="integer", minimum=_bound(metadata, "ge"), maximum=_bound(metadata, "le"), **common
        )
    if annotation is str:
        return Field(kind="text", **common)
    if origin is list:
        (item,) = typing.get_args(annotation)
        item_type, item_meta, _ = _unwrap(item, [])
        if item_type is int and _DURATION_VALIDATOR in item_meta:
            return Field(kind="durations", **common)
        if isinstance(item_type, type) and issubclass(item_type, BaseModel):
            return Field(kind="rows", children=fields_of(item_type), **common)
    if origin in (typing.Union, types.UnionType):
        models = typing.get_args(annotation)
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in models):
            return Field(
                kind="variants",
                variants=tuple(Variant(variant_tag(m) or "", fields_of(m)) for m in models),
                **common,
            )
    raise TypeError(f"the admin form has no input for {prop!r} of type {annotation!r}")


def _bound(metadata: list[Any], which: Literal["ge", "le"]) -> int | None:
    kind = annotated_types.Ge if which == "ge" else annotated_types.Le
    for item in metadata:
        if isinstance(item, kind):
            return int(getattr(item, which))
    return None
