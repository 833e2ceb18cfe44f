"""The engine delivering to harness MX hosts over real sockets, real TLS and real DNS."""

from __future__ import annotations

import pytest

from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import MakeEngine


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


@pytest.mark.harness_mx("mx1.plain.test")
async def test_esmtp_parameters_are_passed_when_offered(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.send(
        "a@sender.test",
        ["b@plain.test"],
        env_id="id+2B42",
        ret=model.Ret.HDRS,
        smtputf8=True,
        eightbitmime=True,
        notify=frozenset({model.Notify.FAILURE, model.Notify.DELAY}),
        orcpt="rfc822;b@plain.test",
    )
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    [received] = harness.mx("mx1.plain.test").received
    params = dict(received.mail_params)
    assert params["SIZE"] is not None and int(params["SIZE"]) >= len(received.body)
    assert (params["RET"], params["ENVID"], params["BODY"]) == ("HDRS", "id+2B42", "8BITMIME")
    assert "SMTPUTF8" in params
    assert dict(received.rcpts[0].params) == {
        "NOTIFY": "DELAY,FAILURE",
        "ORCPT": "rfc822;b@plain.test",
    }


@pytest.mark.harness_mx("mx1.ascii.test", advertise={"smtputf8": False})
async def test_an_smtputf8_message_is_never_sent_to_a_host_without_smtputf8(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.send("", ["bö@ascii.test"], smtputf8=True)
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.FAILED
    assert settled.outcome.status == "5.6.7" and "SMTPUTF8" in settled.outcome.reason
    assert harness.mx("mx1.ascii.test").received == []
