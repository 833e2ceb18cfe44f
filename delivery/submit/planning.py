"""The intake's planner: the engine's ``schedule`` planning, bound to the registry and DNS.

`make_planner` builds the `message.PlanRecipients` that the submission listener and
`delivery send` use. It is the engine's own intake planning
(`delivery.engine.intake.plan_recipients`, which the worker uses for its DSNs), over the
registry's snapshot of the moment, so a message queued here and one queued by the engine are
planned alike: the ``schedule`` expression, evaluated on each new recipient's variables,
picks the schedule, hence the virtual queue, the first delay notice and the expiry.

Outcomes: as `engine.intake.plan_recipients`: one `model.NewRecipient` per request, due at
once; a ``dns_query()`` that cannot be answered selects the ``default`` schedule (warning
logged); `model.InvalidEnvelope` for an address that cannot be queued.

This module is the one place the submit package reaches into the engine; the listener itself
only receives the planner as a value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from delivery import expr
from delivery.engine import intake as engine_intake
from delivery.expr import resolve as expr_resolve
from delivery.queue import model
from delivery.registry.snapshot import Snapshot
from delivery.submit.message import PlanRecipients, RecipientRequest

__all__ = ["make_planner"]


def make_planner(
    snapshot: Callable[[], Snapshot],
    /,
    *,
    local_domains: Iterable[str],
    lookup: expr_resolve.Lookup,
) -> PlanRecipients:
    """make_planner - the intake planner over the registry's current snapshot.

    :param snapshot: returns the current registry snapshot (``Registry.snapshot``); read once
        per message, so all its recipients are planned under one snapshot.
    :param local_domains: ``[local] domains``, for ``is_local_domain()``.
    :param lookup: answers ``dns_query()`` (``engine.attempt.make_lookup(resolver)``).
    """
    env = expr.Environment(local_domains=frozenset(d.lower() for d in local_domains))

    async def plan(
        message: model.NewMessage, requests: Sequence[RecipientRequest], /
    ) -> list[model.NewRecipient]:
        return await engine_intake.plan_recipients(
            snapshot(),
            message,
            requests,
            env=env,
            lookup=lookup,
            now=message.received_at,
        )

    return plan
