"""Is this POST from our own page? The CSRF decision of the web admin, as a pure function.

Every POST to /admin must carry the session's CSRF token (form field ``csrf`` or header
``X-CSRF-Token``, for scripts) and, when the browser says where the request comes from, come
from this very origin. The session cookie is SameSite=Strict already; these checks stand on
their own, for browsers or proxies that do not honour it.

Outcomes:
    check_post(...) -> None when the request may go on, else a `Refused` saying why.

Security:
    The token is compared in constant time. ``Origin`` (RFC 6454), when present, must name the
    host the request was sent to (``Host``); ``Origin: null`` (sandboxed frames, some
    redirects) is refused. ``Sec-Fetch-Site`` (Fetch Metadata), when present, must be
    ``same-origin`` or ``none`` (typed by the user). A missing header is not a refusal: old
    browsers and non-browser clients omit them, and the CSRF token still decides.

Standards: RFC 6454 (Origin), W3C Fetch Metadata Request Headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from delivery.admin.sessions import same_secret

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "Refused", "check_post"]

CSRF_FIELD = "csrf"
"""The hidden form field that carries the CSRF token."""
CSRF_HEADER = "X-CSRF-Token"
"""The header that carries it for the page's scripts."""

_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a POST was refused, for the 403 page and the log."""

    reason: str


def check_post(
    *,
    expected: str,
    given: str | None,
    origin: str | None,
    host: str | None,
    fetch_site: str | None,
) -> Refused | None:
    """Decide whether a POST may run.

    :param expected: the session's CSRF token (or the sign-in form token).
    :param given: the token the request carried, or None.
    :param origin: the ``Origin`` header, or None when absent.
    :param host: the ``Host`` header the request was sent to.
    :param fetch_site: the ``Sec-Fetch-Site`` header, or None when absent.

    >>> check_post(expected="t", given="t", origin="http://a:1", host="a:1", fetch_site=None)
    >>> check_post(expected="t", given="t", origin="http://evil", host="a:1", fetch_site=None)
    Refused(reason="the request came from another site ('http://evil')")
    """
    if fetch_site is not None and fetch_site.lower() not in _ALLOWED_FETCH_SITES:
        return Refused(f"the request came from another site (Sec-Fetch-Site: {fetch_site})")
    if origin is not None:
        netloc = urlsplit(origin).netloc if origin != "null" else ""
        if not netloc or host is None or netloc.lower() != host.lower():
            return Refused(f"the request came from another site ({origin!r})")
    if not given:
        return Refused("the form carried no CSRF token; reload the page and try again")
    if not same_secret(given, expected):
        return Refused("the form's CSRF token is not this session's; reload the page")
    return None
