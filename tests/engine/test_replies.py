"""Every stage's 4xx and 5xx, classified (DESIGN §4 last_error, RFC 3463 status, disposition)."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.errors import LastError
from delivery.queue import model
from tests.plugins.engine import MakeEngine
from tests.plugins.harness import MakeLab

SCHEDULED, FAILED = model.RecipientStatus.SCHEDULED, model.RecipientStatus.FAILED
REPLY = LastError.UNEXPECTED_REPLY

CASES: list[tuple[str, dict[str, Any], model.RecipientStatus, str, LastError, str]] = [
    # (label, replies, new state, status, kind, words in the reason)
    ("421 greeting", {"greeting": "421 4.3.2 busy"}, SCHEDULED, "4.3.2", REPLY, "greeting"),
    ("554 greeting defers", {"greeting": "554 5.7.1 go away"}, SCHEDULED, "4.7.1", REPLY, "554"),
    ("4xx EHLO", {"ehlo": "451 4.3.0 later"}, SCHEDULED, "4.3.0", REPLY, "EHLO"),
    ("4xx MAIL", {"mail": "451 4.3.0 later"}, SCHEDULED, "4.3.0", REPLY, "MAIL FROM"),
    ("5xx MAIL", {"mail": "550 5.7.1 sender rejected"}, FAILED, "5.7.1", REPLY, "MAIL FROM"),
    ("4xx RCPT", {"rcpt": {"*": "450 4.2.1 busy"}}, SCHEDULED, "4.2.1", REPLY, "RCPT TO"),
    ("5xx RCPT", {"rcpt": {"*": "550 5.1.1 no such user"}}, FAILED, "5.1.1", REPLY, "RCPT TO"),
    ("4xx DATA", {"data": "451 4.3.0 later"}, SCHEDULED, "4.3.0", REPLY, "DATA"),
    ("5xx DATA", {"data": "554 5.3.4 too big"}, FAILED, "5.3.4", REPLY, "DATA"),
    ("4xx end of data", {"end_of_data": "452 4.3.1 full"}, SCHEDULED, "4.3.1", REPLY, "end of"),
    ("5xx end of data", {"end_of_data": "554 5.6.0 bad"}, FAILED, "5.6.0", REPLY, "end of"),
    ("no enhanced code", {"rcpt": {"*": "550 nope"}}, FAILED, "5.0.0", REPLY, "550 nope"),
    ("dropped after DATA", {"data": {"close": True}}, SCHEDULED, "4.4.2", LastError.IO, "DATA"),
    (
        "dropped at greeting",
        {"greeting": {"close": True}},
        SCHEDULED,
        "4.4.2",
        LastError.CONNECTION,  # never greeted: the host is not reachable as an SMTP server
        "greeting",
    ),
]


@pytest.mark.parametrize(
    ("label", "replies", "state", "status", "kind", "words"),
    CASES,
    ids=[case[0] for case in CASES],
)
async def test_replies_at_every_stage(
    label: str,
    replies: dict[str, Any],
    state: model.RecipientStatus,
    status: str,
    kind: LastError,
    words: str,
    make_lab: MakeLab,
    make_engine: MakeEngine,
) -> None:
    lab = await make_lab(
        {"domains": {"replies.test": {"mx": [{"name": "mx1.replies.test", "replies": replies}]}}}
    )
    world = await make_engine(lab)
    message_id = await world.send("", ["b@replies.test"])
    [settled] = await world.worker.wait_settled(1)
    assert (settled.status, settled.outcome.status, settled.outcome.kind) == (state, status, kind)
    assert words in settled.outcome.reason
    assert "mx1.replies.test[" in settled.outcome.reason
    [stored] = await world.recipients(message_id)
    assert stored.status is state and stored.last_error is kind
    assert lab.mx("mx1.replies.test").received == []


async def test_recipients_of_one_message_get_their_own_outcomes(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "mixed.test": {
                    "mx": [
                        {
                            "name": "mx1.mixed.test",
                            "replies": {
                                "rcpt": {
                                    "gone@*": "550 5.1.1 no such user",
                                    "busy@*": "450 4.2.1 mailbox busy",
                                }
                            },
                        }
                    ]
                }
            }
        }
    )
    world = await make_engine(lab)
    await world.send("", ["ok@mixed.test", "gone@mixed.test", "busy@mixed.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(3)}
    assert settled["ok@mixed.test"].status is model.RecipientStatus.DELIVERED
    assert settled["gone@mixed.test"].status is FAILED
    assert settled["busy@mixed.test"].status is SCHEDULED
    [received] = lab.mx("mx1.mixed.test").received
    assert received.rcpt_tos == ["ok@mixed.test"]
