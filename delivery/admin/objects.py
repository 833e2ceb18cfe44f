"""Settings › MTA › Outbound › TLS Strategies (and routes, connection strategies, delivery
schedules, virtual queues): list, filter, create, edit and delete, from the schema.

One set of handlers serves every collection of `COLLECTIONS`; the form of each object is
derived from its wire model (fields.py, forms.py), so enums are choices, durations read "5m",
and the API's SetErrors appear beside the field they name. A tagged type (MtaRoute: Mx, Relay,
Local) offers one "New" per ``@type``; its ``@type`` is fixed once created.

Routes (under /admin), for each collection slug:
    GET  /outbound/{slug}?name=text       the list, filtered by name (the API's name filter)
    GET  /outbound/{slug}/new[?type=T]    an empty form with the defaults
    POST /outbound/{slug}/new             x:<Type>/set create
    GET  /outbound/{slug}/{id}            the object: a form with Update, a list without
    POST /outbound/{slug}/{id}            x:<Type>/set update (name is immutable: not sent)
    POST /outbound/{slug}/{id}/delete     x:<Type>/set destroy

Security: New needs sys<Type>Create, the form sys<Type>Update, Delete sys<Type>Destroy; what
the token lacks is not shown, and the API refuses it anyway (403 page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from delivery import durations
from delivery.admin import fields as form_fields
from delivery.admin import forms, layout
from delivery.admin.client import CallError
from delivery.admin.context import Visit, call_failed, html_response, refusal, visit_of
from delivery.admin.fields import Field
from delivery.admin.html import Markup, element, url, void
from delivery.registry import schema

__all__ = ["COLLECTIONS", "Collection", "add_routes", "summary"]

LIST_LIMIT: Final = 200
"""Objects listed per page: a type holds at most 1000 (registry/changes.py), real ones a few."""


@dataclass(frozen=True, slots=True)
class Collection:
    """One managed collection as the admin shows it.

    :ivar columns: wire properties summarised in the list, after name and description.
    """

    slug: str
    object_type: str
    title: str
    singular: str
    columns: tuple[str, ...]

    @property
    def path(self) -> str:
        """The list page, under /admin."""
        return f"/outbound/{self.slug}"

    @property
    def spec(self) -> schema.ObjectSpec:
        """The schema of the type."""
        found = schema.spec_of(self.object_type)
        if found is None:
            raise LookupError(self.object_type)
        return found


COLLECTIONS: Final[tuple[Collection, ...]] = (
    Collection(
        "tls-strategies",
        "MtaTlsStrategy",
        "TLS Strategies",
        "TLS strategy",
        ("startTls", "dane", "mtaSts", "allowInvalidCerts", "tlsTimeout"),
    ),
    Collection("routes", "MtaRoute", "Routes", "route", ("@type", "address", "port")),
    Collection(
        "connection-strategies",
        "MtaConnectionStrategy",
        "Connection Strategies",
        "connection strategy",
        ("ehloHostname", "sourceIps", "connectTimeout", "dataTimeout"),
    ),
    Collection(
        "schedules",
        "MtaDeliverySchedule",
        "Delivery Schedules",
        "delivery schedule",
        ("queue", "retry", "notify", "expiry"),
    ),
    Collection(
        "virtual-queues", "MtaVirtualQueue", "Virtual Queues", "virtual queue", ("threadsPerNode",)
    ),
)

_BY_SLUG: Final = {c.slug: c for c in COLLECTIONS}


def _fields(collection: Collection, tag: str) -> tuple[Field, ...]:
    return form_fields.fields_of(collection.spec.variants[tag])


def _all_fields(collection: Collection) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for model in collection.spec.variants.values():
        for field in form_fields.fields_of(model):
            out.setdefault(field.prop, field)
    return out


def summary(field: Field | None, value: Any, /) -> str:
    """A property's value in a list cell: durations as "5m", lists joined, objects briefly.

    >>> summary(None, "Relay"), summary(None, None)
    ('Relay', '')
    """
    if value is None:
        return ""
    kind = field.kind if field is not None else None
    if kind == "duration" and isinstance(value, int):
        return durations.format_duration(value)
    if kind == "durations" and isinstance(value, list):
        return ", ".join(durations.format_duration(v) for v in value if isinstance(v, int))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "rows" and isinstance(value, list):
        return f"{len(value)}"
    if kind == "variants" and isinstance(value, Mapping):
        parts = [str(value.get(form_fields.TAG, ""))]
        for key, item in value.items():
            if key != form_fields.TAG and isinstance(item, int) and "expire" in key:
                parts.append(durations.format_duration(item))
            elif key != form_fields.TAG and key != "secret":
                parts.append(str(item))
        return " ".join(parts)
    return str(value)


def _tags(collection: Collection) -> list[str]:
    return list(collection.spec.variants)


def _tag_of(collection: Collection, obj: Mapping[str, Any]) -> str:
    if not collection.spec.tagged:
        return ""
    tag = obj.get(form_fields.TAG)
    return tag if isinstance(tag, str) and tag in collection.spec.variants else _tags(collection)[0]


def _collection(request: web.Request) -> Collection:
    found = _BY_SLUG.get(request.match_info["slug"])
    if found is None:
        raise web.HTTPNotFound()
    return found


def _crumbs(collection: Collection | None = None) -> list[str | tuple[str, str]]:
    crumbs: list[str | tuple[str, str]] = list(layout.SETTINGS_CRUMBS)
    if collection is not None:
        crumbs.append((collection.title, collection.path))
    return crumbs


# --- list -------------------------------------------------------------------------------------


async def _list(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    name_filter = request.query.get("name", "").strip()
    found = await visit.client.query_get(
        collection.object_type,
        filter={"name": name_filter} if name_filter else None,
        limit=LIST_LIMIT,
    )
    if isinstance(found, CallError):
        return call_failed(visit, found)
    rows, total = found
    all_fields = _all_fields(collection)
    head = element(
        "tr",
        None,
        element("th", None, "Name"),
        element("th", None, "Description"),
        [
            element("th", None, form_fields.label_of(c) if c != "@type" else "Type")
            for c in collection.columns
        ],
    )
    body = []
    for obj in rows:
        link = element(
            "a",
            {"href": layout.BASE + url(collection.path, str(obj.get("id")))},
            str(obj.get("name", "")),
        )
        body.append(
            element(
                "tr",
                {"data-id": str(obj.get("id")), "data-name": str(obj.get("name", ""))},
                element("td", None, link),
                element("td", None, str(obj.get("description") or "")),
                [
                    element("td", None, summary(all_fields.get(c), obj.get(c)))
                    for c in collection.columns
                ],
            )
        )
    filter_form = element(
        "form",
        {
            "method": "get",
            "action": layout.BASE + collection.path,
            "class": "filter",
            "role": "search",
        },
        element("label", {"for": "name-filter"}, "Name contains"),
        void(
            "input", {"id": "name-filter", "name": "name", "value": name_filter, "type": "search"}
        ),
        layout.button("Filter"),
    )
    new_links = None
    if visit.client.may(collection.object_type, "Create"):
        tags = _tags(collection) if collection.spec.tagged else [""]
        new_links = element(
            "p",
            {"class": "actions"},
            [
                element(
                    "a",
                    {
                        "class": "button primary",
                        "href": layout.BASE + url(collection.path, "new", query={"type": tag}),
                    },
                    f"New {tag + ' ' if tag else ''}{collection.singular}",
                )
                for tag in tags
            ],
        )
    count = element(
        "p",
        {"class": "count"},
        f"{total if total is not None else len(rows)} {'match' if name_filter else 'in all'}",
    )
    table = (
        element(
            "table", {"class": "list"}, element("thead", None, head), element("tbody", None, body)
        )
        if rows
        else element(
            "p",
            {"class": "empty"},
            "None" + (f" whose name contains {name_filter!r}." if name_filter else "."),
        )
    )
    markup = layout.page(
        visit.viewer,
        title=collection.title,
        current=collection.path,
        crumbs=_crumbs(),
        flashes=visit.session.take_flashes(),
        body=[element("div", {"class": "toolbar"}, filter_form, new_links), count, table],
    )
    return html_response(markup)


# --- the form ---------------------------------------------------------------------------------


def _form_page(
    visit: Visit,
    collection: Collection,
    *,
    obj_id: str | None,
    tag: str,
    values: forms.FormValues,
    errors: Mapping[str, Sequence[str]],
    title: str,
    status: int = 200,
) -> web.Response:
    fields = _fields(collection, tag)
    creating = obj_id is None
    may_edit = visit.client.may(collection.object_type, "Create" if creating else "Update")
    base = layout.BASE + collection.path
    parts: list[Markup | None] = []
    form_errors = errors.get("", ())
    if form_errors:
        parts.append(
            element(
                "div",
                {"class": "flash error", "role": "alert"},
                [element("p", None, e) for e in form_errors],
            )
        )
    if collection.spec.tagged:
        parts.append(element("p", {"class": "variant-of"}, "Type: ", element("strong", None, tag)))
    if may_edit:
        action = f"{base}/new" if creating else base + url("", obj_id or "")
        parts.append(
            layout.post_form(
                visit.viewer,
                action,
                layout.hidden(form_fields.TAG, tag) if collection.spec.tagged else None,
                forms.render_fields(fields, values, errors, creating=creating),
                element(
                    "div",
                    {"class": "actions"},
                    layout.button("Create" if creating else "Save", kind="primary"),
                    element("a", {"href": base, "class": "button"}, "Cancel"),
                ),
                css="object-form",
                form_id="object-form",
            )
        )
    else:
        parts.append(forms.render_values(fields, values))
    if not creating and visit.client.may(collection.object_type, "Destroy"):
        name = values.get("name", "")
        parts.append(
            layout.post_form(
                visit.viewer,
                base + url("", obj_id or "", "delete"),
                layout.button(f"Delete {collection.singular}", kind="danger"),
                css="delete",
                confirm=f"Delete the {collection.singular} {name!r}?",
            )
        )
    markup = layout.page(
        visit.viewer,
        title=title,
        current=collection.path,
        crumbs=_crumbs(collection),
        flashes=visit.session.take_flashes(),
        body=parts,
    )
    return html_response(markup, status=status)


def _title(collection: Collection, obj: Mapping[str, Any]) -> str:
    """ "TLS strategy strict": the edit page's title."""
    return f"{collection.singular[0].upper()}{collection.singular[1:]} {obj.get('name', '')}"


def _strings(form: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _new_form(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    tag = _tag_of(collection, {form_fields.TAG: request.query.get("type")})
    values = forms.to_form(_fields(collection, tag), {})
    title = f"New {tag + ' ' if tag else ''}{collection.singular}"
    return _form_page(
        visit, collection, obj_id=None, tag=tag, values=values, errors={}, title=title
    )


async def _create(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    form = _strings(await request.post())
    tag = _tag_of(collection, form)
    wire = forms.from_form(_fields(collection, tag), form, include_immutable=True)
    if collection.spec.tagged:
        wire = {form_fields.TAG: tag, **wire}
    outcome = await visit.client.set_one(collection.object_type, "create", "new", wire)
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    title = f"New {tag + ' ' if tag else ''}{collection.singular}"
    if not outcome.ok:
        if outcome.error_type == "forbidden":
            return refusal(visit, "Not allowed", str(outcome.value.get("description")), status=403)
        errors = forms.errors_by_field(outcome.value)
        return _form_page(
            visit,
            collection,
            obj_id=None,
            tag=tag,
            values=form,
            errors=errors,
            title=title,
            status=422,
        )
    visit.session.flash("ok", f"Created the {collection.singular} {wire.get('name')!r}.")
    raise web.HTTPSeeOther(layout.BASE + collection.path)


async def _one(visit: Visit, collection: Collection, obj_id: str) -> dict[str, Any] | web.Response:
    found = await visit.client.get(collection.object_type, [obj_id])
    if isinstance(found, CallError):
        return call_failed(visit, found)
    if not found:
        return refusal(
            visit, "Not found", f"There is no {collection.singular} with id {obj_id!r}.", status=404
        )
    return found[0]


async def _show(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    obj = await _one(visit, collection, request.match_info["id"])
    if isinstance(obj, web.Response):
        return obj
    tag = _tag_of(collection, obj)
    values = forms.to_form(_fields(collection, tag), obj)
    return _form_page(
        visit,
        collection,
        obj_id=str(obj["id"]),
        tag=tag,
        values=values,
        errors={},
        title=_title(collection, obj),
    )


async def _update(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    obj = await _one(visit, collection, request.match_info["id"])
    if isinstance(obj, web.Response):
        return obj
    tag = _tag_of(collection, obj)
    form = _strings(await request.post())
    patch = forms.from_form(_fields(collection, tag), form, include_immutable=False)
    outcome = await visit.client.set_one(collection.object_type, "update", str(obj["id"]), patch)
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    if not outcome.ok:
        if outcome.error_type == "forbidden":
            return refusal(visit, "Not allowed", str(outcome.value.get("description")), status=403)
        values = {**form, "name": str(obj.get("name", ""))}
        return _form_page(
            visit,
            collection,
            obj_id=str(obj["id"]),
            tag=tag,
            values=values,
            errors=forms.errors_by_field(outcome.value),
            title=_title(collection, obj),
            status=422,
        )
    visit.session.flash("ok", f"Saved the {collection.singular} {obj.get('name')!r}.")
    raise web.HTTPSeeOther(layout.BASE + url(collection.path, str(obj["id"])))


async def _delete(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    collection = _collection(request)
    obj_id = request.match_info["id"]
    outcome = await visit.client.set_one(collection.object_type, "destroy", obj_id)
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    if not outcome.ok:
        if outcome.error_type == "forbidden":
            return refusal(visit, "Not allowed", str(outcome.value.get("description")), status=403)
        if outcome.error_type == "notFound":
            return refusal(visit, "Not found", str(outcome.value.get("description")), status=404)
        visit.session.flash("error", f"Not deleted: {outcome.value.get('description')}")
        raise web.HTTPSeeOther(layout.BASE + url(collection.path, obj_id))
    visit.session.flash("ok", f"Deleted the {collection.singular}.")
    raise web.HTTPSeeOther(layout.BASE + collection.path)


def add_routes(router: web.UrlDispatcher, /) -> None:
    """The routes of every collection page."""
    slugs = "|".join(c.slug for c in COLLECTIONS)
    base = f"/outbound/{{slug:{slugs}}}"
    router.add_get(base, _list)
    router.add_get(f"{base}/new", _new_form)
    router.add_post(f"{base}/new", _create)
    router.add_get(f"{base}/{{id}}", _show)
    router.add_post(f"{base}/{{id}}", _update)
    router.add_post(f"{base}/{{id}}/delete", _delete)
