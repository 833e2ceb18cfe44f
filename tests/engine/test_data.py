"""Message content: bare LF and bare CR never split a message (no SMTP smuggling)."""

from __future__ import annotations

import pytest

from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import MakeEngine

SMUGGLED = b"MAIL FROM:<evil@attacker.test>"
TAIL = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<v@plain.test>\r\nDATA\r\nspoof\r\n.\r\nbye\r\n"
BODIES = {  # a would-be end of data, then a second transaction
    "bare LF dot": b"Subject: x\r\n\r\nhello\n.\n" + TAIL,
    "bare CR dot": b"Subject: x\r\n\r\nhello\r.\r" + TAIL,
    "LF dot CRLF": b"Subject: x\r\n\r\nhello\n.\r\n" + TAIL,
    "CRLF dot LF": b"Subject: x\r\n\r\nhello\r\n.\n" + TAIL,
}


@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
@pytest.mark.harness_mx("mx1.plain.test")
async def test_bare_cr_and_lf_never_split_the_message(
    body: bytes, harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.send("a@sender.test", ["b@plain.test"], body=body)
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    receiver = harness.mx("mx1.plain.test")
    [received] = receiver.received
    assert received.rcpt_tos == ["b@plain.test"]
    assert SMUGGLED in received.body and b"bye" in received.body
    assert len([c for c in receiver.commands if c.upper().startswith("MAIL")]) == 1
    assert not any("attacker" in c for c in receiver.commands)
