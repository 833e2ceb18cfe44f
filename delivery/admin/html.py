"""HTML built by construction, escaped everywhere: the only way the admin pages make markup.

`Markup` is text already safe to place in an HTML document. `element()` builds one element:
every attribute value and every child that is not `Markup` is escaped, so a value from the
store, the API or the request can never become markup. Nothing else in delivery.admin writes
``<`` or ``&`` by hand.

    element("a", {"href": "/admin/queue?domain=" + domain}, "Queue of ", domain)

Attributes: ``True`` writes a bare attribute (``disabled``), ``False`` and ``None`` omit it,
numbers are written in decimal. Children: `Markup` as is, other text escaped, None skipped,
and any iterable of children flattened.

Security:
    Tag and attribute names come from code, never from input, and are checked against NAME.
    Text and attribute values are escaped with `html.escape` (quotes included), which is safe
    in element content and in double-quoted attributes. ``href``/``action``/``src`` values are
    built from fixed paths plus escaped, URL-quoted parts by the callers (see `url()`).

Limits: none; pages are small and built in memory.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

__all__ = ["NAME", "Child", "Markup", "element", "escape", "join", "url", "void"]

NAME = re.compile(r"[a-z][a-z0-9-]*")
"""Tag and attribute names: fixed by the code, checked so a typo cannot smuggle markup."""

_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})
"""Elements that have no content and no end tag (HTML Living Standard §13.1.2)."""


class Markup(str):
    """Text that is already HTML; concatenating it with plain text is not allowed."""

    __slots__ = ()

    def __add__(self, other: str) -> Markup:
        if not isinstance(other, Markup):
            return NotImplemented
        return Markup(str.__add__(self, other))


Child = Markup | str | int | float | None | Iterable["Child"]
"""What an element may contain."""

AttributeValue = str | int | bool | None


def escape(value: object, /) -> Markup:
    """``value`` as HTML text: Markup unchanged, anything else escaped.

    >>> escape("<b> & 'x'"), escape(Markup("<b>"))
    ('&lt;b&gt; &amp; &#x27;x&#x27;', '<b>')
    """
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(children: Iterable[Child], /) -> Markup:
    """The children as one Markup, escaping what is not Markup already."""
    parts: list[str] = []
    _flatten(children, parts)
    return Markup("".join(parts))


def _flatten(child: Child, out: list[str]) -> None:
    if child is None:
        return
    if isinstance(child, str | int | float):
        out.append(escape(child))
        return
    for item in child:
        _flatten(item, out)


def _attributes(attrs: Mapping[str, AttributeValue]) -> str:
    parts: list[str] = []
    for name, value in attrs.items():
        if not NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an attribute name")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {name}")
        else:
            parts.append(f' {name}="{escape(value)}"')
    return "".join(parts)


def element(
    tag: str, attrs: Mapping[str, AttributeValue] | None = None, /, *children: Child
) -> Markup:
    """``<tag attrs>children</tag>``, everything escaped that is not Markup.

    >>> element("a", {"href": "/x?a=1&b=2", "hidden": True}, "<me>")
    '<a href="/x?a=1&amp;b=2" hidden>&lt;me&gt;</a>'
    """
    if not NAME.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a tag name")
    opening = f"<{tag}{_attributes(attrs or {})}>"
    if tag in _VOID:
        if children:
            raise ValueError(f"<{tag}> has no content")
        return Markup(opening)
    return Markup(f"{opening}{join(children)}</{tag}>")


def void(tag: str, attrs: Mapping[str, AttributeValue] | None = None, /) -> Markup:
    """An element without content, e.g. ``<input ...>``; same as `element` with no children."""
    return element(tag, attrs)


def url(path: str, /, *segments: str, query: Mapping[str, str] | None = None) -> str:
    """``path`` followed by URL-quoted ``segments`` and an encoded query (empty values dropped).

    >>> url("/admin/queue", "a/b c", query={"domain": "x.test", "status": ""})
    '/admin/queue/a%2Fb%20c?domain=x.test'
    """
    out = path + "".join("/" + quote(segment, safe="") for segment in segments)
    pairs = {k: v for k, v in (query or {}).items() if v}
    return f"{out}?{urlencode(pairs)}" if pairs else out
