"""Intake planning: the queue state of a new message's recipients.

Every way mail enters the queue (the submission listener, `delivery send`, and the worker's own
DSNs) queues its recipients the same way: the `schedule` expression, evaluated on the rcpt
variables of the new message, picks the delivery schedule, and so the virtual queue, the
first delay notice and the expiry of each recipient.

Outcomes:
    One `model.NewRecipient` per requested address, due at once.
    A `dns_query()` in the expression that cannot be answered selects the schedule named
    `default` (the built-in schedule unless one has that name) and logs a warning: accepting
    mail must not hang on DNS, and the expiry of a schedule is only an upper bound.
    A malformed address raises `model.InvalidEnvelope` (a ValueError) naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from delivery import expr
from delivery.engine import planner, variables
from delivery.errors import DnsTempFail
from delivery.expr import resolve as expr_resolve
from delivery.queue import model
from delivery.queue.model import RecipientRequest
from delivery.registry import snapshot as registry

__all__ = ["RecipientRequest", "plan_recipients"]

log = logging.getLogger("delivery.engine.intake")


async def plan_recipients(
    snapshot: registry.Snapshot,
    message: model.NewMessage,
    requests: Sequence[RecipientRequest],
    /,
    *,
    env: expr.Environment,
    lookup: expr_resolve.Lookup,
    now: int,
) -> list[model.NewRecipient]:
    """plan_recipients - the recipients of ``message`` to queue, each under its schedule.

    :param lookup: answers ``dns_query()`` in the `schedule` expression.
    :raises model.InvalidEnvelope: an address that cannot be queued.
    """
    addresses = [request.address for request in requests]
    planned = []
    for request in requests:
        rcpt_vars = variables.new_rcpt_variables(
            message, request.address, recipients=addresses, now=now
        )
        try:
            value = await expr.evaluate_resolving(
                snapshot.outbound.schedule, rcpt_vars, env, lookup
            )
        except DnsTempFail as exc:
            log.warning("schedule of %s: %s; using %r", request.address, exc, planner.DEFAULT_NAME)
            value = planner.DEFAULT_NAME
        schedule = planner.select_schedule(snapshot, value)
        planned.append(
            planner.new_recipient(
                request.address,
                schedule,
                received_at=now,
                notify=request.notify,
                orcpt=request.orcpt,
            )
        )
    return planned
