"""The JMAP Session object served at ``GET /.well-known/jmap`` (RFC 8620 §2).

The management API has exactly one account, `ACCOUNT_ID`, holding every managed object. The
Session lists the two capabilities (``urn:ietf:params:jmap:core`` with the limits this server
enforces, and ``urn:stalwart:jmap`` with the object types it manages), that account, the
authenticated token's name as ``username``, and the absolute API URL.

Outcomes:
    make_session() returns the Session as a JSON-ready dict; it cannot fail.

Security:
    Served only to an authenticated token; it reveals the token's name and whether it may
    change anything (``isReadOnly``), never a secret.

Standards: RFC 8620 §2.
Limits: there are no blob uploads, downloads or push: the URL templates are given because RFC
8620 requires them, and answer 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from delivery.api import auth, request

__all__ = ["ACCOUNT_ID", "SESSION_STATE", "core_capability", "make_session"]

ACCOUNT_ID = "delivery"
"""The single account of every response; requests may send any accountId, or none."""


def core_capability() -> dict[str, Any]:
    """The ``urn:ietf:params:jmap:core`` capability: the caps of request.py."""
    return {
        "maxSizeUpload": 0,
        "maxConcurrentUpload": 1,
        "maxSizeRequest": request.MAX_SIZE_REQUEST_BYTES,
        "maxConcurrentRequests": request.MAX_CONCURRENT_REQUESTS,
        "maxCallsInRequest": request.MAX_CALLS_IN_REQUEST,
        "maxObjectsInGet": request.MAX_OBJECTS_IN_GET,
        "maxObjectsInSet": request.MAX_OBJECTS_IN_SET,
        "collationAlgorithms": ["i;ascii-casemap", "i;unicode-casemap"],
    }


SESSION_STATE = hashlib.sha256(
    json.dumps([ACCOUNT_ID, core_capability()], sort_keys=True).encode()
).hexdigest()[:16]
"""Changes only when this server's session shape changes (RFC 8620 §2 ``state``)."""


def _mutating_permissions(object_types: Iterable[str]) -> list[str]:
    return [auth.permission(t, op) for t in object_types for op in auth.SET_OPS]


def make_session(
    principal: auth.Principal, object_types: Iterable[str], *, base_url: str
) -> dict[str, Any]:
    """The Session for ``principal``; ``base_url`` is the scheme and authority, no slash."""
    types = tuple(object_types)
    capability = {"objectTypes": list(types)}
    read_only = not principal.may_any(_mutating_permissions(types))
    return {
        "capabilities": {
            request.CORE_CAPABILITY: core_capability(),
            request.STALWART_CAPABILITY: capability,
        },
        "accounts": {
            ACCOUNT_ID: {
                "name": "delivery",
                "isPersonal": False,
                "isReadOnly": read_only,
                "accountCapabilities": {request.STALWART_CAPABILITY: capability},
            }
        },
        "primaryAccounts": {request.STALWART_CAPABILITY: ACCOUNT_ID},
        "username": principal.name,
        "apiUrl": f"{base_url}/api",
        "downloadUrl": f"{base_url}/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}",
        "uploadUrl": f"{base_url}/upload/{{accountId}}/",
        "eventSourceUrl": f"{base_url}/eventsource/?types={{types}}&closeafter={{closeafter}}"
        "&ping={{ping}}",
        "state": SESSION_STATE,
    }
