"""Intake: take responsibility for a message a client sent, or refuse it; the end-of-data step.

`Intake.accept` is what the listener awaits for each `delivery.smtp.server.Deliver`: it
builds the message (`message.new_message`), asks the planner for each recipient's queue,
schedule and expiry, writes everything to the queue store in one `QueueStore.enqueue`, and
only when that returned (the message is committed and flushed to disk) answers 250. Then it
calls ``on_enqueued`` (the worker's wake-up).

Outcomes (the `Decision` whose reply ends the DATA/BDAT transaction):
    250 2.0.0 Ok: queued as <id>   durable; the submitter may forget the message
    451 4.3.0                      the store failed (`StoreError`) or planning could not
                                   finish (a `DeliveryError`, e.g. DNS): nothing was queued,
                                   the submitter keeps the message and retries
    554 5.6.0                      the envelope cannot be queued (`InvalidEnvelope`)
The reply names the reason; the log line names the peer and the reason.

Security: nothing is acknowledged before it is durable; a store failure leaves nothing
half-written (enqueue is one transaction).
Limits: a session cancelled while ``enqueue`` runs (the listener stopping past its grace
period) may leave the message queued without its 250: the client retries and the message
may arrive twice, never zero times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from delivery.errors import DeliveryError
from delivery.queue import model
from delivery.queue.store import QueueStore, StoreError
from delivery.smtp import server
from delivery.submit import message as submit_message

__all__ = ["Intake"]

log = logging.getLogger("delivery.submit")


def _reply(code: int, text: str) -> server.Decision:
    return server.Decision(server.Reply(code, text))


class Intake:
    """Queue accepted messages durably (see the module docstring).

    :param store: the queue store.
    :param plan_recipients: chooses each recipient's queue, schedule and expiry.
    :param hostname: our name, for the Received header.
    :param on_enqueued: called after each successful enqueue (wakes the worker).
    :param clock: epoch ms now.
    """

    def __init__(
        self,
        store: QueueStore,
        plan_recipients: submit_message.PlanRecipients,
        /,
        *,
        hostname: str,
        on_enqueued: Callable[[], None] = lambda: None,
        clock: Callable[[], int] = model.now_ms,
    ) -> None:
        self.store = store
        self.plan_recipients = plan_recipients
        self.hostname = hostname
        self.on_enqueued = on_enqueued
        self.clock = clock

    async def accept(
        self, received: server.ReceivedMessage, /, *, local_port: int
    ) -> server.Decision:
        """Queue ``received`` and answer 250, or refuse it with the reason (never raises
        for a store or planning failure).

        :param local_port: the port the client connected to.
        """
        peer = f"{received.peer[0]}:{received.peer[1]}"
        new = submit_message.new_message(
            received, hostname=self.hostname, received_at=self.clock(), local_port=local_port
        )
        requests = submit_message.recipient_requests(received)
        try:
            recipients = await self.plan_recipients(new, requests)
            message_id = await self.store.enqueue(new, recipients)
        except model.InvalidEnvelope as exc:
            log.warning("refused a message from %s (<%s>): %s", peer, received.mail_from, exc)
            return _reply(554, f"5.6.0 Error: cannot queue this message: {exc}")
        except StoreError as exc:
            log.error("cannot queue a message from %s (<%s>): %s", peer, received.mail_from, exc)
            return _reply(451, "4.3.0 Error: queue file write error, try again later")
        except DeliveryError as exc:
            log.error("cannot plan a message from %s (<%s>): %s", peer, received.mail_from, exc)
            return _reply(451, "4.3.0 Error: cannot schedule the message now, try again later")
        log.info(
            "queued %s from <%s> for %d recipient(s), %d octets, client %s%s%s",
            message_id,
            new.sender,
            len(recipients),
            len(new.body),
            peer,
            f", TLS {received.tls.version}" if received.tls is not None else "",
            f", authenticated as {received.auth!r}" if received.auth is not None else "",
        )
        self.on_enqueued()
        return _reply(250, f"2.0.0 Ok: queued as {message_id}")
