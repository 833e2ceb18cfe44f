"""The intake planner over a real registry: the ``schedule`` expression places each recipient,
for the listener as for `delivery send`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from delivery.errors import DnsTempFail
from delivery.expr import Value
from delivery.queue import model
from delivery.registry.service import Registry
from delivery.submit import planning
from delivery.submit.message import RecipientRequest
from tests.submit.conftest import GatedStore, MakeListener

T0 = 1_700_000_000_000
DAY_MS = 86_400_000


async def no_dns(name: str, rtype: str) -> Value:
    raise DnsTempFail(f"dns_query({name!r}, {rtype!r}) failed: SERVFAIL")


async def must_set(registry: Registry, type_name: str, **changes: Any) -> None:
    result = await registry.set(
        type_name,
        if_in_state=None,
        create=changes.get("create"),
        update=changes.get("update"),
        destroy=None,
    )
    assert result["notCreated"] is None and result["notUpdated"] is None, result


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry with the first-start objects, a ``bulk`` schedule expiring after 3 attempts,
    and a ``schedule`` expression: big messages to bulk, local domains to local."""
    registry = await Registry.open(f"sqlite://{tmp_path}/registry.db")
    await must_set(registry, "MtaVirtualQueue", create={"q": {"name": "bulk"}})
    bulk = {
        "name": "bulk",
        "queue": "bulk",
        "retry": ["1m"],
        "notify": [],
        "expiry": {"@type": "Attempts", "maxAttempts": 3},
    }
    await must_set(registry, "MtaDeliverySchedule", create={"s": bulk})
    schedule = {
        "match": [
            {"if": "size > 1000", "then": "'bulk'"},
            {"if": "is_local_domain(rcpt_domain)", "then": "'local'"},
            {"if": "rcpt_domain == 'dns.test' && len(dns_query(rcpt_domain, 'TXT')) > 0",
             "then": "'bulk'"},
        ],
        "else": "'remote'",
    }  # fmt: skip
    await must_set(registry, "MtaOutboundStrategy", update={"singleton": {"schedule": schedule}})
    yield registry
    await registry.close()


def message(size: int = 10) -> model.NewMessage:
    return model.NewMessage(
        sender="a@origin.test",
        body=b"x" * size,
        source=model.MessageSource.AUTHENTICATED,
        received_at=T0,
    )


PLACEMENTS = [  # (label, message size, address, queue, schedule, expires_at, max_attempts)
    ("remote", 10, "b@example.com", "remote", "remote", T0 + 3 * DAY_MS, None),
    ("local domain", 10, "b@Example.ORG", "local", "local", T0 + 3 * DAY_MS, None),
    ("big message", 5000, "b@example.com", "bulk", "bulk", None, 3),
    ("DNS down: default", 10, "b@dns.test", "remote", "default", T0 + 3 * DAY_MS, None),
]


@pytest.mark.parametrize(
    ("label", "size", "address", "queue", "schedule", "expires_at", "max_attempts"),
    PLACEMENTS,
    ids=[p[0] for p in PLACEMENTS],
)
async def test_the_schedule_expression_places_each_recipient(
    registry: Registry,
    label: str,
    size: int,
    address: str,
    queue: str,
    schedule: str,
    expires_at: int | None,
    max_attempts: int | None,
) -> None:
    plan = planning.make_planner(registry.snapshot, local_domains=["example.org"], lookup=no_dns)
    request = RecipientRequest(address, frozenset({model.Notify.FAILURE}), "rfc822;b@x")
    (recipient,) = await plan(message(size), [request])
    assert (recipient.address, recipient.queue, recipient.schedule) == (address, queue, schedule)
    assert (recipient.due, recipient.expires_at, recipient.max_attempts) == (
        T0,
        expires_at,
        max_attempts,
    )
    assert (recipient.notify, recipient.orcpt) == (request.notify, request.orcpt)


async def test_the_listener_with_the_registry_planner(
    make_listener: MakeListener, gated_store: GatedStore, registry: Registry, client_ip: str
) -> None:
    plan = planning.make_planner(registry.snapshot, local_domains=["example.org"], lookup=no_dns)
    listener = await make_listener(plan=plan)
    host, port = listener.address
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=False, source_address=(client_ip, 0), timeout=5
    ) as client:
        await client.sendmail("a@origin.test", ["x@example.org", "y@example.com"], b"Hi\r\n")
    (queued,) = await gated_store.list_messages()
    assert [(r.address, r.schedule, r.queue) for r in queued.recipients] == [
        ("x@example.org", "local", "local"),
        ("y@example.com", "remote", "remote"),
    ]
    assert all(r.notify_due == queued.received_at + DAY_MS for r in queued.recipients)
