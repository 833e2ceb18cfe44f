"""One generic form for every managed collection: render it, read it back, place its errors.

The pure core of the object pages. `to_form` turns a wire object (from /get, or the schema
defaults for a new one) into form values; `render_fields` draws the inputs of fields.py for
those values with the errors beside each field; `from_form` turns a submitted form back into
a wire object for /set. Values are passed to the API as typed where the API accepts text
(durations "5m", integers that do not read as integers), so that every judgement of a value
is the API's own and its SetError names the field.

Form names: the wire path joined by ``.``: ``mtaStsTimeout``, ``sourceIps.0.sourceIp``,
``expiry.@type``, ``expiry.Ttl.expire`` (a variant's fields live under its tag).

Outcomes:
    from_form(fields, form, include_immutable=...) -> a wire object (never raises).
    errors_by_field(set_error) -> {top-level property or "": [messages]}.

Security:
    Everything rendered goes through html.element (escaped). A secret (``authSecret``'s
    ``secret``) is never written into the page except as the mask /get shows, which /set
    reads as "unchanged" (registry/changes.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from delivery import durations
from delivery.admin import fields as form_fields
from delivery.admin.fields import Field
from delivery.admin.html import Markup, element, join, void
from delivery.registry import changes

__all__ = [
    "HELP",
    "FormValues",
    "errors_by_field",
    "from_form",
    "render_fields",
    "render_values",
    "to_form",
]

FormValues = Mapping[str, str]
"""Form field name -> submitted text (a checked checkbox is present, an unchecked absent)."""

CHECKED: Final = "on"
"""What a checked checkbox submits."""

SECRET_PROPS: Final = frozenset({"secret"})
"""Properties that hold a password: shown as a password input, never echoed."""

HELP: Final[dict[str, str]] = {
    "name": "Short identifier, the value an expression returns; cannot be changed later.",
    "description": "A note for the people who run this server.",
    "allowInvalidCerts": "Deliver even when the server's certificate does not verify.",
    "dane": "Whether DANE is required, optional, or disabled.",
    "mtaSts": "Whether MTA-STS is required, optional, or disabled.",
    "startTls": "Whether TLS support is required, optional, or disabled.",
    "mtaStsTimeout": "Maximum time to wait for the MTA-STS policy lookup to complete.",
    "tlsTimeout": "Maximum time to wait for STARTTLS and the TLS handshake to complete.",
    "ipLookupStrategy": "Which address families to look up for each MX host, in order.",
    "maxMultihomed": "Addresses tried per MX host in one attempt.",
    "maxMxHosts": "MX hosts tried in one attempt.",
    "address": "Host name or IP address of the relay.",
    "implicitTls": "TLS from the first byte (port 465 style) instead of STARTTLS.",
    "authSecret": "Password for SMTP AUTH: the value, an environment variable or a file.",
    "ehloHostname": "Name sent in EHLO; empty means the daemon's hostname.",
    "sourceIps": "Local addresses to send from, each with an optional EHLO name.",
    "queue": "The virtual queue that delivers recipients on this schedule.",
    "retry": "Delay before each retry; the last one repeats until the message expires.",
    "notify": "Queue age at which the sender gets a delay notice.",
    "expiry": "When to give up: after a time (Ttl) or a number of attempts.",
    "threadsPerNode": "Concurrent deliveries of this queue on each node.",
}
"""One line of help per wire property (from the reference pages where they have one)."""

_LIST_SPLIT = re.compile(r"[\s,]+")
_INTEGER = re.compile(r"-?\d+")


# --- wire -> form -----------------------------------------------------------------------------


def _text_of(field: Field, value: Any) -> str:
    if value is None:
        return ""
    if field.kind == "duration" and isinstance(value, int):
        return durations.format_duration(value)
    if field.kind == "durations" and isinstance(value, list):
        return ", ".join(
            durations.format_duration(v) if isinstance(v, int) else str(v) for v in value
        )
    if field.kind == "bool":
        return CHECKED if value else ""
    return str(value)


def to_form(
    fields: Sequence[Field], data: Mapping[str, Any], /, prefix: str = ""
) -> dict[str, str]:
    """Form values of the wire object ``data`` (missing properties take their defaults).

    >>> tls = form_fields.fields_of(__import__("delivery").registry.schema.TlsStrategyModel)
    >>> to_form(tls, {"name": "x", "tlsTimeout": 90000})["tlsTimeout"]
    '90s'
    """
    out: dict[str, str] = {}
    for field in fields:
        name = prefix + field.prop
        value = data.get(field.prop, field.default)
        if field.kind == "rows":
            for index, row in enumerate(value if isinstance(value, list) else []):
                if isinstance(row, Mapping):
                    out.update(to_form(field.children, row, f"{name}.{index}."))
        elif field.kind == "variants":
            tag = value.get(form_fields.TAG) if isinstance(value, Mapping) else None
            out[f"{name}.{form_fields.TAG}"] = str(tag or "")
            for variant in field.variants:
                if variant.tag == tag and isinstance(value, Mapping):
                    out.update(to_form(variant.fields, value, f"{name}.{variant.tag}."))
        else:
            text = _text_of(field, value)
            if field.kind != "bool" or text:
                out[name] = text
    return out


# --- form -> wire -----------------------------------------------------------------------------


def _row_indexes(form: FormValues, name: str) -> list[int]:
    found: set[int] = set()
    for key in form:
        head, _, _ = key.removeprefix(f"{name}.").partition(".")
        if key.startswith(f"{name}.") and head.isdigit():
            found.add(int(head))
    return sorted(found)


def _scalar(field: Field, raw: str | None) -> tuple[bool, Any]:
    """(include?, wire value) of one scalar input."""
    if field.kind == "bool":
        return True, raw is not None
    text = raw if field.prop in SECRET_PROPS else (raw or "").strip()
    text = text or ""
    if field.kind in ("duration", "integer") and not text:
        return field.default is not None, field.default
    if field.kind == "integer":
        return True, int(text) if _INTEGER.fullmatch(text) else text
    if field.kind == "durations":
        return True, [item for item in _LIST_SPLIT.split(text) if item]
    if field.kind == "text" and not text and field.nullable:
        return True, None
    return True, text


def from_form(
    fields: Sequence[Field], form: FormValues, /, *, include_immutable: bool, prefix: str = ""
) -> dict[str, Any]:
    """The wire object a submitted form describes (module docstring for the rules).

    :param include_immutable: send ``name`` (a create); an update leaves it out.

    >>> tls = form_fields.fields_of(__import__("delivery").registry.schema.TlsStrategyModel)
    >>> from_form(tls, {"name": "s", "tlsTimeout": "90s", "dane": "require"},
    ...           include_immutable=True)["tlsTimeout"]
    '90s'
    """
    out: dict[str, Any] = {}
    for field in fields:
        name = prefix + field.prop
        if field.immutable and not include_immutable:
            continue
        if field.kind == "rows":
            rows = []
            for index in _row_indexes(form, name):
                row_prefix = f"{name}.{index}."
                if not any(
                    form.get(row_prefix + child.prop, "").strip() for child in field.children
                ):
                    continue  # a blank row is "no row": the form always offers one
                rows.append(
                    from_form(field.children, form, include_immutable=True, prefix=row_prefix)
                )
            out[field.prop] = rows
        elif field.kind == "variants":
            tag = form.get(f"{name}.{form_fields.TAG}", "").strip()
            if not tag:
                out[field.prop] = None
                continue
            chosen = next((v for v in field.variants if v.tag == tag), None)
            value: dict[str, Any] = {form_fields.TAG: tag}
            if chosen is not None:
                value.update(
                    from_form(chosen.fields, form, include_immutable=True, prefix=f"{name}.{tag}.")
                )
            out[field.prop] = value
        else:
            include, wire = _scalar(field, form.get(name))
            if include:
                out[field.prop] = wire
    return out


# --- SetError -> messages per field -----------------------------------------------------------


def errors_by_field(error: Mapping[str, Any], /) -> dict[str, list[str]]:
    """The messages of a SetError, keyed by the top-level property they concern ("" = form).

    invalidProperties descriptions are ``"<path>: <message>; <path>: <message>"``
    (registry/validation.py); each part goes to the property its path starts with.

    >>> errors_by_field({"type": "invalidProperties", "properties": ["tlsTimeout", "retry"],
    ...   "description": "tlsTimeout: must be positive; retry/1: 'x' is not a duration"})
    {'tlsTimeout': ['must be positive'], 'retry': ["retry/1: 'x' is not a duration"]}
    >>> errors_by_field({"type": "alreadyExists", "description": "name 'a' is taken"})
    {'name': ["name 'a' is taken"]}
    """
    description = str(error.get("description", ""))
    kind = error.get("type")
    if kind == "alreadyExists":
        return {"name": [description]}
    properties = [str(p) for p in error.get("properties") or []]
    if kind != "invalidProperties" or not properties:
        return {"": [description or str(kind)]}
    props = "|".join(re.escape(p) for p in sorted(properties, key=len, reverse=True))
    starts = list(re.finditer(rf"(?:^|; )(({props})(?:/[^:;]*)?): ", description))
    out: dict[str, list[str]] = {}
    if not starts or starts[0].start() != 0:
        out[""] = [description[: starts[0].start() if starts else len(description)]]
    for number, match in enumerate(starts):
        end = starts[number + 1].start() if number + 1 < len(starts) else len(description)
        path, prop = match.group(1), match.group(2)
        message = description[match.end() : end]
        out.setdefault(prop, []).append(message if path == prop else f"{path}: {message}")
    return out


# --- rendering --------------------------------------------------------------------------------


def _hint(field: Field) -> str:
    parts = [HELP.get(field.prop, "")]
    if field.kind == "duration":
        shown = durations.format_duration(field.default) if isinstance(field.default, int) else ""
        parts.append(
            f"A duration such as 90s, 5m, 1h or 2d{f'; default {shown}' if shown else ''}."
        )
    elif field.kind == "durations":
        parts.append("Durations separated by commas, e.g. 2m, 5m, 1h.")
    elif field.kind == "integer" and field.minimum is not None and field.maximum is not None:
        parts.append(f"From {field.minimum} to {field.maximum}.")
    return " ".join(p for p in parts if p)


def _input_id(name: str) -> str:
    return "in-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _control(field: Field, name: str, values: FormValues) -> Markup:
    value = values.get(name, "")
    attrs: dict[str, Any] = {"id": _input_id(name), "name": name}
    if field.kind == "bool":
        return void(
            "input", {**attrs, "type": "checkbox", "value": CHECKED, "checked": name in values}
        )
    if field.kind == "choice":
        options = [
            element("option", {"value": c, "selected": c == value}, c) for c in field.choices
        ]
        return element("select", attrs, options)
    if field.prop in SECRET_PROPS:
        shown = value if value == changes.SECRET_MASK else ""
        return void("input", {**attrs, "type": "password", "value": shown, "autocomplete": "off"})
    attrs["value"] = value
    attrs["type"] = "text"
    if field.kind == "integer":
        attrs["inputmode"] = "numeric"
    if field.kind in ("duration", "integer") and field.default is not None:
        attrs["placeholder"] = _text_of(field, field.default)
    if field.required:
        attrs["required"] = True
    attrs["spellcheck"] = "false"
    return void("input", attrs)


def _errors(messages: Sequence[str]) -> Markup:
    if not messages:
        return Markup("")
    return element(
        "ul", {"class": "field-errors", "role": "alert"}, [element("li", None, m) for m in messages]
    )


def _one(
    field: Field, name: str, values: FormValues, errors: Sequence[str], *, editable_name: bool
) -> Markup:
    box_id = "field-" + _input_id(name).removeprefix("in-")
    hint = _hint(field)
    css = "field" + (" invalid" if errors else "")
    if field.kind == "rows":
        return element(
            "fieldset",
            {"class": css + " rows", "id": box_id},
            element("legend", None, field.label),
            element("p", {"class": "hint"}, hint) if hint else None,
            _rows(field, name, values),
            _errors(errors),
        )
    if field.kind == "variants":
        return element(
            "fieldset",
            {"class": css + " variants", "id": box_id},
            element("legend", None, field.label),
            element("p", {"class": "hint"}, hint) if hint else None,
            _variants(field, name, values),
            _errors(errors),
        )
    if field.immutable and not editable_name:
        control: Markup = element("output", {"id": _input_id(name)}, values.get(name, ""))
    else:
        control = _control(field, name, values)
    label = element("label", {"for": _input_id(name)}, field.label)
    if field.kind == "bool":
        return element(
            "div",
            {"class": css + " check", "id": box_id},
            control,
            label,
            element("p", {"class": "hint"}, hint) if hint else None,
            _errors(errors),
        )
    return element(
        "div",
        {"class": css, "id": box_id},
        label,
        control,
        element("p", {"class": "hint"}, hint) if hint else None,
        _errors(errors),
    )


def _rows(field: Field, name: str, values: FormValues) -> Markup:
    count = max([i + 1 for i in _row_indexes(values, name)] or [0]) + 1  # one blank row to fill
    head = element(
        "tr", None, [element("th", None, c.label) for c in field.children], element("th", None)
    )
    body = []
    for index in range(count):
        cells = []
        for child in field.children:
            child_name = f"{name}.{index}.{child.prop}"
            cells.append(element("td", None, _control(child, child_name, values)))
        cells.append(
            element(
                "td",
                None,
                element(
                    "button", {"type": "button", "class": "row-remove", "hidden": True}, "Remove"
                ),
            )
        )
        body.append(element("tr", {"class": "row", "data-index": index}, cells))
    return join(
        [
            element(
                "table",
                {"class": "row-table", "data-rows": name},
                element("thead", None, head),
                element("tbody", None, body),
            ),
            element(
                "button",
                {"type": "button", "class": "row-add", "data-rows": name, "hidden": True},
                "Add row",
            ),
        ]
    )


def _variants(field: Field, name: str, values: FormValues) -> Markup:
    tag_name = f"{name}.{form_fields.TAG}"
    current = values.get(tag_name, "")
    options = []
    if field.nullable:
        options.append(element("option", {"value": "", "selected": not current}, "None"))
    options.extend(
        element("option", {"value": v.tag, "selected": v.tag == current}, v.tag)
        for v in field.variants
    )
    select = element(
        "select", {"id": _input_id(tag_name), "name": tag_name, "class": "variant-select"}, options
    )
    parts = [element("label", {"for": _input_id(tag_name)}, "Type"), select]
    for variant in field.variants:
        inner = [
            _one(child, f"{name}.{variant.tag}.{child.prop}", values, (), editable_name=True)
            for child in variant.fields
        ]
        parts.append(
            element(
                "div",
                {"class": "variant", "data-variant-of": tag_name, "data-variant": variant.tag},
                element("p", {"class": "variant-title"}, f"When {variant.tag}:"),
                inner,
            )
        )
    return join(parts)


def render_fields(
    fields: Sequence[Field],
    values: FormValues,
    errors: Mapping[str, Sequence[str]],
    /,
    *,
    creating: bool,
) -> Markup:
    """The inputs of ``fields`` filled from ``values``, each with its errors beside it.

    :param creating: a new object: ``name`` is an input; otherwise it is shown, not sent.
    """
    return join(
        _one(field, field.prop, values, errors.get(field.prop, ()), editable_name=creating)
        for field in fields
    )


def _shown(field: Field, name: str, values: FormValues) -> Markup | str:
    if field.kind == "bool":
        return "yes" if name in values else "no"
    if field.kind == "rows":
        rows = [
            ", ".join(
                values.get(f"{name}.{i}.{c.prop}", "")
                for c in field.children
                if values.get(f"{name}.{i}.{c.prop}")
            )
            for i in _row_indexes(values, name)
        ]
        return join(element("div", None, row) for row in rows) if rows else "none"
    if field.kind == "variants":
        tag = values.get(f"{name}.{form_fields.TAG}", "")
        variant = next((v for v in field.variants if v.tag == tag), None)
        if variant is None:
            return "none"
        details = [
            f"{c.label}: {values.get(f'{name}.{tag}.{c.prop}', '')}"
            for c in variant.fields
            if c.prop not in SECRET_PROPS
        ]
        return f"{tag}" + (f" ({'; '.join(details)})" if details else "")
    if field.prop in SECRET_PROPS:
        return changes.SECRET_MASK
    return values.get(name, "") or "—"


def render_values(fields: Sequence[Field], values: FormValues, /) -> Markup:
    """The object as a read-only list: what a token without the Update permission sees."""
    return element(
        "dl",
        {"class": "values"},
        [
            join(
                [
                    element("dt", None, field.label),
                    element("dd", {"data-prop": field.prop}, _shown(field, field.prop, values)),
                ]
            )
            for field in fields
        ],
    )
