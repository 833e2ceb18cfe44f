"""Managed objects (DESIGN §3): schemas, defaults, the store, and JMAP /get, /set, /query.

The API layer calls `Registry`; the engine reads `Registry.snapshot()`. Modules:
    service.py      Registry: the calls, transactions, ids and states
    schema.py       wire schemas (pydantic), the object types and their limits
    defaults.py     every default value and the first-start objects
    changes.py      the decision for one /set item (validation, names, references, secrets)
    patch.py        RFC 8620 PatchObject application
    expressions.py  compiling the four strategy expressions
    query.py        /query filters and sorting
    snapshot.py     the engine's frozen view
    store.py        the store protocol; sqlite.py implements it
"""

from delivery.registry.errors import MethodError, SetError, StoreError
from delivery.registry.service import Registry
from delivery.registry.snapshot import Snapshot

__all__ = ["MethodError", "Registry", "SetError", "Snapshot", "StoreError"]
