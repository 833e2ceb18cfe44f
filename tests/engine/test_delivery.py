"""The engine delivering to harness MX hosts over real sockets, real TLS and real DNS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import EngineWorld

MakeEngine = Callable[..., Awaitable[EngineWorld]]


@pytest.mark.harness_mx("mx1.plain.test", tls="none")
async def test_delivers_to_a_plain_mx(harness: harness_lab.Lab, make_engine: MakeEngine) -> None:
    world = await make_engine(harness)
    message_id = await world.send("a@sender.test", ["b@plain.test", "c@plain.test"])
    settled = await world.worker.wait_settled(2)
    received = harness.mx("mx1.plain.test").received
    assert len(received) == 1
    assert received[0].rcpt_tos == ["b@plain.test", "c@plain.test"]
    assert received[0].mail_from == "a@sender.test"
    assert received[0].tls is None
    assert [s.status for s in settled] == [model.RecipientStatus.DELIVERED] * 2
    stored = await world.recipients(message_id)
    assert {r.status for r in stored} == {model.RecipientStatus.DELIVERED}
    assert "mx1.plain.test" in stored[0].last_status
    assert "250" in stored[0].last_status
