"""Connection reuse by the engine, over real sockets: which messages share a connection, which
never may (DESIGN §5.3), and what happens when a pooled connection went stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from delivery.harness import lab as harness_lab
from delivery.harness import smtp_server
from delivery.queue import model
from delivery.smtp import pool as smtp_pool
from tests.plugins.engine import EngineWorld, MakeEngine
from tests.plugins.harness import MakeLab
from tests.smtp.servers import Conn, Dialect, respond

DELIVERED = model.RecipientStatus.DELIVERED
WAIT_S = 5.0


async def deliver_one_by_one(
    world: EngineWorld, messages: list[tuple[str, str]]
) -> list[model.RecipientStatus]:
    """Send each (sender, recipient) once the previous one is settled: each can reuse."""
    for number, (sender, recipient) in enumerate(messages, start=1):
        await world.send(sender, [recipient])
        await world.worker.wait_settled(number)
    return [settled.status for settled in world.worker.settled]


def recipients_by_session(receiver: smtp_server.SmtpReceiver) -> list[list[str]]:
    """The RCPT TO addresses of each connection, in order."""
    return [
        [line.split("<", 1)[1].rstrip(">") for line in s.commands if line.startswith("RCPT TO:")]
        for s in receiver.sessions
    ]


async def with_tls_strategies(world: EngineWorld, tls: dict[str, object]) -> None:
    """Strategies ``plain`` (no STARTTLS) and ``strict`` (STARTTLS required), and the `tls`
    expression ``tls``."""
    await world.create("MtaTlsStrategy", name="plain", startTls="disable")
    await world.create("MtaTlsStrategy", name="strict", startTls="require")
    await world.outbound(tls=tls)


@pytest.mark.harness_mx("mx1.reuse.test", tls="valid")
async def test_messages_to_one_domain_share_one_connection(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    messages = [("a@sender.test", f"r{n}@reuse.test") for n in range(3)]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 3
    receiver = harness.mx("mx1.reuse.test")
    [session] = receiver.sessions
    assert session.messages == 3 and session.tls is not None
    assert sum(line == "RSET" for line in session.commands) == 2  # each reuse was checked
    assert world.worker.pool.reused == 2


async def test_two_domains_sharing_an_mx_never_share_a_connection(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    shared = {"name": "mx.shared.test", "tls": "valid"}
    lab = await make_lab(
        {"domains": {"a.test": {"mx": [shared]}, "b.test": {"mx": [{"name": "mx.shared.test"}]}}}
    )
    world = await make_engine(lab)
    messages = [("s@sender.test", address) for address in ("1@a.test", "2@b.test", "3@a.test")]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 3
    # The same TLS plan for both, yet each domain's mail has a connection of its own.
    assert recipients_by_session(lab.mx("mx.shared.test")) == [
        ["1@a.test", "3@a.test"],
        ["2@b.test"],
    ]


async def test_domains_with_different_tls_policies_on_one_mx_never_share_a_connection(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    shared = {"name": "mx.shared.test", "tls": "valid"}
    lab = await make_lab(
        {
            "domains": {
                "weak.test": {"mx": [shared]},
                "strict.test": {"mx": [{"name": "mx.shared.test"}]},
            }
        }
    )
    world = await make_engine(lab)
    await with_tls_strategies(
        world,
        {"match": [{"if": "rcpt_domain == 'weak.test'", "then": "'plain'"}], "else": "'strict'"},
    )
    messages = [("s@sender.test", a) for a in ("1@weak.test", "2@strict.test", "3@weak.test")]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 3
    receiver = lab.mx("mx.shared.test")
    assert recipients_by_session(receiver) == [["1@weak.test", "3@weak.test"], ["2@strict.test"]]
    assert [session.tls is not None for session in receiver.sessions] == [False, True]


@pytest.mark.harness_mx("mx1.mixed.test", tls="valid")
async def test_a_stricter_plan_never_gets_a_connection_opened_under_a_weaker_one(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await with_tls_strategies(
        world,
        {
            "match": [{"if": "sender == 'strict@sender.test'", "then": "'strict'"}],
            "else": "'plain'",
        },
    )
    # One domain, one MX: the clear-text connection of the first message is idle in the pool
    # when the second, which requires TLS, goes out.
    messages = [("plain@sender.test", "1@mixed.test"), ("strict@sender.test", "2@mixed.test")]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 2
    receiver = harness.mx("mx1.mixed.test")
    assert recipients_by_session(receiver) == [["1@mixed.test"], ["2@mixed.test"]]
    assert [message.tls is not None for message in receiver.received] == [False, True]
    assert world.worker.pool.reused == 0


@pytest.mark.harness_mx("mx1.reuse.test")
async def test_a_connection_carries_at_most_max_messages(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, start=False)
    world.worker.pool = smtp_pool.ConnectionPool(max_messages=2)
    await world.worker.start()
    messages = [("a@sender.test", f"r{n}@reuse.test") for n in range(3)]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 3
    sessions = harness.mx("mx1.reuse.test").sessions
    assert [session.messages for session in sessions] == [2, 1]
    assert sessions[0].commands[-1] == "QUIT"


@pytest.mark.harness_mx("mx1.reuse.test")
async def test_an_idle_connection_is_closed_and_the_next_message_opens_a_new_one(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, start=False)
    world.worker.pool = smtp_pool.ConnectionPool(idle_ms=100)
    await world.worker.start()
    receiver = harness.mx("mx1.reuse.test")
    await deliver_one_by_one(world, [("a@sender.test", "1@reuse.test")])
    [first] = await receiver.wait_for_connections(1, closed=True, within=WAIT_S)
    assert first.commands[-1] == "QUIT"
    await world.send("a@sender.test", ["2@reuse.test"])
    [_, settled] = await world.worker.wait_settled(2)
    assert settled.status is DELIVERED
    assert [session.messages for session in receiver.sessions] == [1, 1]


# ---- stale connections: a server of our own behind the lab's DNS ------------------------------

Behaviour = Callable[[Conn], Awaitable[None]]


def one_message_then(after: Behaviour) -> Behaviour:
    """Greet, EHLO with PIPELINING, take one message, then run ``after`` on the connection."""

    async def behaviour(conn: Conn) -> None:
        conn.send("220 mx1.stale.test ESMTP")
        await conn.read_command()
        conn.send("250-mx1.stale.test", "250 PIPELINING")
        for _ in range(3):  # MAIL, RCPT, DATA
            await conn.read_command()
        conn.send("250 2.1.0 ok", "250 2.1.5 ok", "354 go on")
        await conn.read_message()
        conn.send("250 2.0.0 queued")
        await after(conn)

    return behaviour


async def answer_rset_421(conn: Conn) -> None:
    """The next write (RSET, MAIL, RCPT, DATA) gets 421 and the connection closes."""
    await conn.read_command()
    conn.send("421 4.3.2 mx1.stale.test shutting down")


async def close_at_once(conn: Conn) -> None:
    """Close as soon as the first message is taken (the client may or may not see it first)."""


class StaleServer:
    """Serves ``first`` on the first connection and a plain PIPELINING server on the others;
    records the connections."""

    def __init__(self, first: Behaviour) -> None:
        self.first, self.conns = first, list[Conn]()
        self.normal = respond(Dialect(extensions=("PIPELINING",)))
        self._server: asyncio.Server | None = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        self.conns.append(conn)
        try:
            await (self.first if len(self.conns) == 1 else self.normal)(conn)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._session, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def stale_world(
    make_lab: MakeLab, make_engine: MakeEngine, loopback_address: str
) -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[EngineWorld, StaleServer]]]]:
    """An engine whose MX for stale.test is a `StaleServer` on a fresh loopback address."""
    servers: list[StaleServer] = []

    async def make(first: Behaviour) -> tuple[EngineWorld, StaleServer]:
        records = [
            {"name": "stale.test", "type": "MX", "value": "10 mx1.stale.test."},
            {"name": "mx1.stale.test", "type": "A", "value": loopback_address},
        ]
        lab = await make_lab(
            {
                "domains": {
                    "other.test": {"mx": [{"name": "mx1.other.test"}]},
                    "stale.test": {"records": records},
                }
            }
        )
        server = StaleServer(first)
        await server.start(loopback_address, lab.smtp_port)
        servers.append(server)
        return await make_engine(lab), server

    yield make
    for server in servers:
        await server.stop()


STALE = [  # (label, what the first connection does after its message, RSET seen on it)
    ("421 to RSET", answer_rset_421, True),
    ("closed while idle", close_at_once, False),
]


@pytest.mark.parametrize(("label", "after", "checked"), STALE, ids=[s[0] for s in STALE])
async def test_a_stale_pooled_connection_is_replaced_without_a_failure(
    label: str,
    after: Behaviour,
    checked: bool,
    stale_world: Callable[[Behaviour], Awaitable[tuple[EngineWorld, StaleServer]]],
) -> None:
    world, server = await stale_world(one_message_then(after))
    messages = [("a@sender.test", "1@stale.test"), ("a@sender.test", "2@stale.test")]
    assert await deliver_one_by_one(world, messages) == [DELIVERED] * 2
    second = world.worker.settled[-1]
    assert second.retry_num == 1  # delivered at its first attempt: nothing held against it
    assert "421" not in second.outcome.reason
    assert [len(conn.messages) for conn in server.conns] == [1, 1]
    # The pool handed the connection out again and RSET found it closing, or the pool saw it
    # closed before handing it out (the client had read the EOF by then).
    assert (server.conns[0].lines[-1] == "RSET") is checked, label
