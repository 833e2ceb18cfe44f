"""``x:Explain/get``: what a delivery to one recipient would do now (`engine.explain`).

Arguments: ``{"recipient": str, "sender": str (optional, default "": the null sender),
"accountId": str (optional)}``. Answer: ``{"accountId", "list": [<explanation>]}`` where the
explanation is `Explanation.to_json` (the JSON ``delivery explain --json`` prints, documented
in delivery/engine/explain.py).

Outcomes:
    forbidden          the token lacks ``sysExplainGet`` (checked by the dispatcher)
    invalidArguments   a missing or non-string ``recipient``, a non-string ``sender``, an
                       unknown argument (the dispatcher checks `SIGNATURE`), or an address
                       that is no RFC 5321 mailbox; the description names the argument
    Lookups that fail are part of the explanation (what they would cause), never an error.

Security:
    Explaining makes the DNS and MTA-STS lookups a delivery would make, through the daemon's
    resolver and caches, and connects to no MX host; hence a permission of its own. The
    explanation shows no secret.

Standards: RFC 8620 §3.6.2 (method errors), §5.1 (/get shape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from delivery import config
from delivery.api import auth, session
from delivery.api.failures import MethodFailure
from delivery.api.methods import ArgumentCheck, HandlerResult, MethodHandler
from delivery.engine import explain
from delivery.engine import worker as engine_worker

__all__ = ["METHOD", "PERMISSION", "SIGNATURE", "handlers", "make_handler"]

METHOD = "x:Explain/get"
PERMISSION = auth.permission("Explain", "Get")
"""``sysExplainGet``: checked by the dispatcher before the handler runs."""


def _string(value: Any) -> bool:
    return isinstance(value, str)


SIGNATURE: dict[str, ArgumentCheck] = {
    "accountId": (_string, "a string"),
    "recipient": (_string, "an address (a string)"),
    "sender": (_string, 'an address (a string; "" for the null sender)'),
}
"""The arguments ``x:Explain/get`` accepts (the dispatcher refuses any other)."""

Explainer = Callable[[str, str], Awaitable[explain.Explanation]]
"""(recipient, sender) -> the explanation; raises `explain.InvalidAddress`."""


def make_handler(explainer: Explainer, /) -> MethodHandler:
    """make_handler - the ``x:Explain/get`` handler that explains with ``explainer``."""

    async def run(arguments: dict[str, Any], principal: auth.Principal) -> HandlerResult:
        recipient = arguments.get("recipient")
        if recipient is None:
            return MethodFailure("invalidArguments", "'recipient' is required: the address")
        try:
            explained = await explainer(recipient, arguments.get("sender") or "")
        except explain.InvalidAddress as exc:
            return MethodFailure("invalidArguments", f"{exc.argument!r}: {exc.reason}")
        return {"accountId": session.ACCOUNT_ID, "list": [explained.to_json()]}

    return MethodHandler(PERMISSION, run, SIGNATURE)


def handlers(
    settings: config.Settings,
    registry: engine_worker.SnapshotSource,
    worker: engine_worker.Worker,
    /,
) -> dict[str, MethodHandler]:
    """handlers - ``{METHOD: handler}`` explaining with ``worker``'s resolver and caches and
    the registry's snapshot at each call (what `delivery serve` mounts)."""

    async def explainer(recipient: str, sender: str) -> explain.Explanation:
        sources = explain.Sources.of_worker(worker, registry.snapshot(), settings)
        return await explain.explain(recipient, sender=sender, sources=sources)

    return {METHOD: make_handler(explainer)}
