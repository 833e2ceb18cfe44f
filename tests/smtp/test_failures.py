"""Failures are classified: each phase's timeout, dropped connections, garbage, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest

from delivery.errors import LastError
from delivery.smtp.errors import (
    ConnectFailed,
    ConnectionLost,
    Phase,
    PhaseTimeout,
    ProtocolViolation,
    SmtpError,
    UnexpectedReply,
)
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.reply import MAX_REPLY_LINE_BYTES, MAX_REPLY_LINES
from tests.smtp.common import MX_IP, MX_NAME, SOURCE_IP, TIMEOUTS, connect
from tests.smtp.servers import (
    Behaviour,
    Dialect,
    ScriptedServer,
    endless_line,
    greet_then_hang_up,
    hang_up,
    respond,
    sends,
    silent,
)

StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("s@example.org", (Recipient("r@example.com"),))
SHORT_MS = 200


async def run_session(server: ScriptedServer, **timeouts: int) -> None:
    """Connect, EHLO and send one message with the given phase timeouts shortened."""
    session = await connect(server.address, dataclasses.replace(TIMEOUTS, **timeouts))
    try:
        await session.ehlo("client.example.org")
        await session.send(ENVELOPE, b"hello")
    finally:
        assert session.closed  # every failure here closes the session
        await session.quit()


PHASE_TIMEOUTS = [  # (server silent at, timeout to shorten, phase, what it says, kind)
    (
        "GREETING",
        "greeting",
        "greeting",
        "did not send its greeting within 0.2s",
        LastError.CONNECTION,
    ),
    ("EHLO", "ehlo", "ehlo", "did not answer EHLO within 0.2s", LastError.IO),
    ("MAIL", "mail_from", "mail", "did not answer MAIL FROM within 0.2s", LastError.IO),
    ("RCPT", "rcpt_to", "rcpt", "did not answer RCPT TO within 0.2s", LastError.IO),
    ("DATA", "data", "data", "did not answer DATA within 0.2s", LastError.IO),
    ("DOT", "data", "dot", "did not answer the end of data within 0.2s", LastError.IO),
]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one at a time", "pipelined"])
@pytest.mark.parametrize(
    ("silent_at", "field", "phase", "says", "kind"),
    PHASE_TIMEOUTS,
    ids=[c[2] for c in PHASE_TIMEOUTS],
)
async def test_each_phase_timeout_is_classified(
    scripted: StartScripted,
    pipelining: bool,
    silent_at: str,
    field: str,
    phase: Phase,
    says: str,
    kind: LastError,
) -> None:
    extensions = ("PIPELINING",) if pipelining else ()
    server = await scripted(respond(Dialect(extensions=extensions, silent_at=silent_at)))
    with pytest.raises(PhaseTimeout) as caught:
        await run_session(server, **{field: SHORT_MS})
    error = caught.value
    assert (error.phase, error.kind) == (phase, kind)
    assert str(error) == f"{MX_NAME}[{MX_IP}]:{server.address[1]} {says}"
    assert isinstance(error, TimeoutError) and error.errno is None
    assert error.args == (MX_NAME, MX_IP, phase, str(error))


def test_the_timeout_table_covers_every_transaction_phase() -> None:
    assert {c[2] for c in PHASE_TIMEOUTS} == {"greeting", "ehlo", "mail", "rcpt", "data", "dot"}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as sock:
        sock.bind((MX_IP, 0))
        yield sock.getsockname()[1]


async def test_connection_refused(closed_port: int) -> None:
    with pytest.raises(ConnectFailed) as caught:
        await connect((MX_IP, closed_port))
    assert (caught.value.phase, caught.value.kind) == ("connect", LastError.CONNECTION)
    assert str(caught.value).startswith(f"cannot connect to {MX_NAME}[{MX_IP}]:{closed_port}: ")


@pytest.fixture
def full_backlog() -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full: further SYNs are dropped, connect() hangs."""
    with socket.socket() as listener:
        listener.bind((MX_IP, 0))
        listener.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()
        for filler in fillers:
            filler.close()


async def test_connect_timeout(full_backlog: tuple[str, int]) -> None:
    with pytest.raises(PhaseTimeout) as caught:
        await connect(full_backlog, dataclasses.replace(TIMEOUTS, connect=SHORT_MS))
    assert (caught.value.phase, caught.value.kind) == ("connect", LastError.CONNECTION)
    assert "did not accept the connection within 0.2s" in str(caught.value)


async def test_source_address_that_is_not_ours(scripted: StartScripted) -> None:
    server = await scripted(silent)
    with pytest.raises(ConnectFailed) as caught:
        await connect(server.address, source_ip="192.0.2.1")  # TEST-NET-1: bind fails locally
    assert "from 192.0.2.1" in str(caught.value) and caught.value.kind is LastError.CONNECTION


async def test_source_binding_from_another_loopback(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect()))
    await connect(server.address, source_ip=SOURCE_IP)
    assert server.conns[0].peer[0] == SOURCE_IP


GARBAGE: list[tuple[str, Behaviour, Phase, str]] = [  # (label, server, phase, reason)
    ("not SMTP at all", sends(b"SSH-2.0-OpenSSH_9.6\r\n"), "greeting", "not an SMTP reply line"),
    (
        "binary greeting",
        sends(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n"),
        "greeting",
        "not an SMTP reply line",
    ),
    (
        "endless greeting line",
        endless_line,
        "greeting",
        f"longer than {MAX_REPLY_LINE_BYTES} bytes",
    ),
    (
        "endless multiline greeting",
        sends(b"220-hello\r\n" * (MAX_REPLY_LINES + 1)),
        "greeting",
        f"more than {MAX_REPLY_LINES} lines",
    ),
    (
        "multiline codes disagree",
        respond(Dialect(replies={"EHLO": "250-mx1.example.test\n550 PIPELINING"})),
        "ehlo",
        "changed its code from 250 to 550",
    ),
    (
        "garbage to MAIL FROM",
        respond(Dialect(replies={"MAIL": "OK, sure"})),
        "mail",
        "not an SMTP reply line",
    ),
]


@pytest.mark.parametrize(
    ("label", "behaviour", "phase", "reason"), GARBAGE, ids=[g[0] for g in GARBAGE]
)
async def test_garbage_is_a_protocol_violation(
    scripted: StartScripted, label: str, behaviour: Behaviour, phase: Phase, reason: str
) -> None:
    server = await scripted(behaviour)
    with pytest.raises(ProtocolViolation) as caught:
        await run_session(server)
    assert (caught.value.phase, caught.value.kind) == (phase, LastError.UNEXPECTED_REPLY)
    assert reason in str(caught.value) and f"{MX_NAME}[{MX_IP}]" in str(caught.value)


DROPS: list[tuple[str, Behaviour, set[str], LastError]] = [
    ("closed before the greeting", hang_up, {"greeting"}, LastError.CONNECTION),
    ("closed after the greeting", greet_then_hang_up, {"ehlo"}, LastError.IO),
    (
        "closed in the middle of DATA",
        respond(Dialect(close_in_data=True)),
        {"data", "dot"},
        LastError.IO,
    ),
]


@pytest.mark.parametrize(("label", "behaviour", "phases", "kind"), DROPS, ids=[d[0] for d in DROPS])
async def test_dropped_connection_is_classified(
    scripted: StartScripted, label: str, behaviour: Behaviour, phases: set[str], kind: LastError
) -> None:
    server = await scripted(behaviour)
    with pytest.raises(SmtpError) as caught:
        await run_session(server)
    assert isinstance(caught.value, ConnectionLost), caught.value
    assert caught.value.phase in phases and caught.value.kind is kind
    assert str(caught.value).startswith(f"lost the connection to {MX_NAME}[{MX_IP}]")


WRONG_CLASS = [  # (label, replies, phase)
    ("250 to DATA", {"DATA": "250 2.0.0 sure, whatever"}, "data"),
    ("354 to RCPT", {"RCPT": "354 go on"}, "rcpt"),
    ("354 to MAIL", {"MAIL": "354 go on"}, "mail"),
    ("354 to the end of data", {"DOT": "354 more please"}, "dot"),
]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one at a time", "pipelined"])
@pytest.mark.parametrize(
    ("label", "replies", "phase"), WRONG_CLASS, ids=[w[0] for w in WRONG_CLASS]
)
async def test_reply_of_the_wrong_class_is_never_an_outcome(
    scripted: StartScripted,
    pipelining: bool,
    label: str,
    replies: dict[str, str],
    phase: Phase,
) -> None:
    # A 250 to DATA must not read as "delivered": the content was never sent.
    extensions = ("PIPELINING",) if pipelining else ()
    server = await scripted(respond(Dialect(extensions=extensions, replies=replies)))
    with pytest.raises(UnexpectedReply) as caught:
        await run_session(server)
    assert (caught.value.phase, caught.value.kind) == (phase, LastError.UNEXPECTED_REPLY)
    assert "which is no answer to it" in str(caught.value)
    if phase != "dot":
        assert server.conns[0].messages == []


async def test_cancelled_step_closes_the_session(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(silent_at="MAIL")))
    session = await connect(server.address)
    await session.ehlo("client.example.org")
    sending = asyncio.ensure_future(session.send(ENVELOPE, b"x"))
    await server.conns[0].silent.wait()  # the server has read MAIL FROM and says nothing
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert session.closed  # half a command on the wire: the session cannot be reused
