"""The submission listener over real sockets and a real SQLite queue: what clients get, and
what the queue holds afterwards."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiosmtplib
import pytest

from delivery.errors import ConfigError, DnsTempFail
from delivery.harness import loopback
from delivery.queue import model
from delivery.queue.store import StoreError
from delivery.smtp import esmtp
from delivery.smtp import tls as smtp_tls
from delivery.smtp.session import SmtpSession, Timeouts
from delivery.submit.credentials import Credentials
from delivery.submit.listener import SubmissionListener
from delivery.submit.message import RecipientRequest
from tests.submit.clients import RawClient
from tests.submit.conftest import HOSTNAME, GatedStore, MakeListener

TIMEOUTS = Timeouts(connect=5000, greeting=5000, ehlo=5000, mail_from=5000, rcpt_to=5000, data=5000)
BODY = b"From: app@origin.test\r\nSubject: test\r\n\r\n.a line with a leading dot\r\nbye\r\n"
SECRET = "correct horse battery staple"
USERS = Credentials.from_secrets({"app": SECRET})


async def connect(listener: SubmissionListener, client_ip: str) -> SmtpSession:
    host, port = listener.address
    session = await SmtpSession.connect(
        host, port, server_name=HOSTNAME, timeouts=TIMEOUTS, source_ip=client_ip
    )
    await session.ehlo("client.test")
    return session


def smtplib_client(listener: SubmissionListener, client_ip: str) -> aiosmtplib.SMTP:
    host, port = listener.address
    return aiosmtplib.SMTP(
        hostname=host,
        port=port,
        start_tls=False,
        local_hostname="client.test",
        source_address=(client_ip, 0),
        timeout=5,
    )


async def test_accepted_message_is_queued_once_with_envelope_params_body_and_trace(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str, enqueued: list[int]
) -> None:
    listener = await make_listener()
    envelope = esmtp.Envelope(
        "Sender@Origin.test",
        (
            esmtp.Recipient("Bob@Example.test", ("SUCCESS", "FAILURE"), "Bob+x@Example.test"),
            esmtp.Recipient("carol@example.test", ("NEVER",)),
        ),
        body_8bit=True,
        dsn_ret="HDRS",
        dsn_envid="Batch 7+1",
    )
    session = await connect(listener, client_ip)
    result = await session.send(envelope, BODY)
    await session.quit()

    assert [reply.code for _, reply in result.per_recipient()] == [250, 250]
    (message,) = await gated_store.list_messages()
    assert f"queued as {message.id}" in result.final[0][1].text
    assert (message.sender, message.source) == (
        "Sender@Origin.test",
        model.MessageSource.UNAUTHENTICATED,
    )
    assert (message.received_from_ip, message.received_via_port) == (client_ip, listener.address[1])
    assert (message.env_id, message.ret) == ("Batch+207+2B1", model.Ret.HDRS)
    assert (message.eightbitmime, message.smtputf8, message.requiretls) == (True, False, False)
    assert [(r.address, r.notify, r.orcpt, r.queue) for r in message.recipients] == [
        (
            "Bob@Example.test",
            frozenset({model.Notify.SUCCESS, model.Notify.FAILURE}),
            "rfc822;Bob+2Bx@Example.test",
            "remote",
        ),
        ("carol@example.test", frozenset({model.Notify.NEVER}), None, "remote"),
    ]
    body = await gated_store.load_body(message.id)
    trace, _, rest = body.partition(b"\r\nFrom: ")
    assert rest == BODY.removeprefix(b"From: ")
    unfolded = trace.replace(b"\r\n\t", b" ").decode()
    assert unfolded.startswith(f"Received: from client.test ([{client_ip}]) by {HOSTNAME}")
    assert "(delivery) with ESMTP;" in unfolded and " for " not in unfolded
    assert enqueued == [1]


async def test_aiosmtplib_client_one_recipient_gets_a_for_clause(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener()
    async with smtplib_client(listener, client_ip) as client:
        errors, reply = await client.sendmail("a@origin.test", ["b@example.test"], BODY)
    assert errors == {} and reply.startswith("2.0.0 Ok: queued as ")
    (message,) = await gated_store.list_messages()
    body = await gated_store.load_body(message.id)
    assert b"for <b@example.test>;" in body.replace(b"\r\n\t", b" ")


async def test_bdat_chunks_are_queued_as_sent(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener()
    client = await RawClient.connect(listener.address, source=client_ip)
    assert (await client.reply()).startswith(f"220 {HOSTNAME}")
    assert "CHUNKING" in await client.command("EHLO client.test")
    await client.send(
        b"MAIL FROM:<a@origin.test> BODY=8BITMIME\r\nRCPT TO:<b@example.test>\r\n"
        b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 6 LAST\r\n.dot\r\n"
    )
    replies = [await client.reply() for _ in range(4)]
    assert [r[:3] for r in replies] == ["250", "250", "250", "250"]
    assert "queued as" in replies[-1]
    (message,) = await gated_store.list_messages()
    assert (await gated_store.load_body(message.id)).endswith(b"\r\nSubject: x\r\n\r\n.dot\r\n")
    await client.close()


async def test_250_comes_only_after_the_store_returned(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener()
    gated_store.gate.clear()
    async with smtplib_client(listener, client_ip) as client:
        sending = asyncio.create_task(client.sendmail("a@origin.test", ["b@example.test"], BODY))
        await gated_store.entered.wait()
        await asyncio.sleep(0.2)  # the client has had time to see a premature reply: none came
        assert not sending.done()
        assert await gated_store.list_messages() == []
        gated_store.gate.set()
        _errors, reply = await sending
    assert "queued as" in reply
    assert len(await gated_store.list_messages()) == 1


async def test_store_failure_answers_451_queues_nothing_and_the_session_goes_on(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str, enqueued: list[int]
) -> None:
    listener = await make_listener()
    gated_store.failure = StoreError("enqueue", "disk I/O error")
    session = await connect(listener, client_ip)
    envelope = esmtp.Envelope("a@origin.test", (esmtp.Recipient("b@example.test"),))
    failed = await session.send(envelope, BODY)
    assert [str(r) for _, r in failed.per_recipient()] == [
        "451 4.3.0 Error: queue file write error, try again later"
    ]
    assert await gated_store.list_messages() == [] and enqueued == []
    gated_store.failure = None
    retried = await session.send(envelope, BODY)
    await session.quit()
    assert [r.code for _, r in retried.per_recipient()] == [250]
    assert len(await gated_store.list_messages()) == 1 and enqueued == [1]


async def test_planning_failure_answers_451(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    async def dns_down(message: model.NewMessage, requests: object, /) -> list[model.NewRecipient]:
        raise DnsTempFail("dns_query('example.test', 'TXT') failed: SERVFAIL")

    listener = await make_listener(plan=dns_down)
    async with smtplib_client(listener, client_ip) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("a@origin.test", ["b@example.test"], BODY)
    assert refused.value.code == 451
    assert await gated_store.list_messages() == []


async def test_client_outside_the_networks_gets_554_at_connect_and_is_named_in_the_log(
    make_listener: MakeListener,
    gated_store: GatedStore,
    harness_pool: loopback.LoopbackPool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    allowed, outsider = harness_pool.take(), harness_pool.take()
    listener = await make_listener(networks=[f"{allowed}/32"])
    caplog.set_level(logging.INFO, logger="delivery.submit")
    client = await RawClient.connect(listener.address, source=outsider)
    greeting = await client.reply()
    assert greeting.startswith("554 5.7.1 ") and outsider in greeting
    assert (await client.command("MAIL FROM:<a@origin.test>")).startswith("503")
    assert (await client.command("QUIT")).startswith("221")
    assert await client.closed()
    assert any(outsider in r.getMessage() and "554" in r.getMessage() for r in caplog.records)
    inside = await RawClient.connect(listener.address, source=allowed)
    assert (await inside.reply()).startswith("220")
    await inside.close()
    assert await gated_store.list_messages() == []


SIZE_CASES = [  # (label, what the client sends after EHLO, final reply start)
    ("declared SIZE over the limit", [b"MAIL FROM:<a@x.test> SIZE=2048"], "552 5.3.4"),
    (
        "undeclared message over the limit",
        [
            b"MAIL FROM:<a@x.test>",
            b"RCPT TO:<b@y.test>",
            b"DATA",
            b"\r\n".join([b"x" * 100] * 20) + b"\r\n.",
        ],
        "552 5.3.4",
    ),
    (
        "BDAT over the limit",
        [b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@y.test>", b"BDAT 4096 LAST\r\n" + b"z" * 4094],
        "552 5.3.4",
    ),
]


@pytest.mark.parametrize(("label", "lines", "expected"), SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
async def test_oversized_messages_are_refused_and_not_queued(
    make_listener: MakeListener,
    gated_store: GatedStore,
    client_ip: str,
    label: str,
    lines: list[bytes],
    expected: str,
) -> None:
    listener = await make_listener(max_message_bytes=1024)
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    assert "250-SIZE 1024" in await client.command("EHLO client.test")
    replies = [await client.command(line) for line in lines]
    assert replies[-1].startswith(expected), replies
    assert (await client.command("NOOP")).startswith("250")  # the session goes on
    await client.close()
    assert await gated_store.list_messages() == []


async def test_too_many_recipients_get_452_and_the_others_are_queued(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener(max_recipients=2)
    session = await connect(listener, client_ip)
    rcpts = tuple(esmtp.Recipient(f"r{n}@example.test") for n in range(3))
    result = await session.send(esmtp.Envelope("a@origin.test", rcpts), BODY)
    await session.quit()
    assert [str(r)[:9] for _, r in result.per_recipient()] == [
        "250 2.0.0",
        "250 2.0.0",
        "452 4.5.3",
    ]
    (message,) = await gated_store.list_messages()
    assert [r.address for r in message.recipients] == ["r0@example.test", "r1@example.test"]


ADDRESS_CASES = [  # (label, command, reply start, what the reply names)
    ("space in the local part", "RCPT TO:<bob smith@example.test>", "501 5.1.3", "dot-atom"),
    ("no domain", "RCPT TO:<bob>", "501 5.1.3", "no @domain"),
    ("empty label", "RCPT TO:<bob@example..test>", "501 5.1.3", "empty label"),
    ("local part too long", f"RCPT TO:<{'x' * 65}@example.test>", "501 5.1.3", "at most 64"),
    ("domain too long", f"RCPT TO:<b@{'.'.join(['d' * 60] * 5)}>", "501 5.1.3", "at most 255"),
    ("CR inside", b"RCPT TO:<bob\r@example.test>", "501 5.1.3", "control character"),
    ("NUL inside", b"RCPT TO:<bob\x00@example.test>", "501 5.1.3", "control character"),
    ("not UTF-8", b"RCPT TO:<b\xffb@example.test>", "501 5.5.2", "not valid UTF-8"),
    ("bad sender", "MAIL FROM:<a@@origin.test>", "501 5.1.7", "Bad sender address"),
    ("ENVID too long", f"MAIL FROM:<a@origin.test> ENVID={'e' * 101}", "501 5.5.4", "ENVID"),
]


@pytest.mark.parametrize(
    ("label", "command", "expected", "named"), ADDRESS_CASES, ids=[c[0] for c in ADDRESS_CASES]
)
async def test_malformed_addresses_get_a_5xx_naming_the_problem(
    make_listener: MakeListener,
    gated_store: GatedStore,
    client_ip: str,
    label: str,
    command: str | bytes,
    expected: str,
    named: str,
) -> None:
    listener = await make_listener()
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    await client.command("EHLO client.test")
    if isinstance(command, bytes) or command.startswith("RCPT"):
        await client.command("MAIL FROM:<a@origin.test>")
    reply = await client.command(command)
    assert reply.startswith(expected) and named in reply, reply
    assert (await client.command("DATA"))[:3] in ("503", "554")  # nothing was accepted
    await client.close()
    assert await gated_store.list_messages() == []


async def test_lf_inside_an_address_ends_the_command_and_smuggles_nothing(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener()
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    await client.command("EHLO client.test")
    await client.command("MAIL FROM:<a@origin.test>")
    await client.send(b"RCPT TO:<bob\nRCPT TO:<evil@example.test>\r\n")
    assert (await client.reply()).startswith("501")  # "RCPT TO:<bob": no closing bracket
    assert (await client.reply()).startswith("250")  # the next line is a command of its own
    await client.close()


async def test_garbage_and_huge_lines_get_500_then_421_and_the_session_ends(
    make_listener: MakeListener, client_ip: str
) -> None:
    listener = await make_listener(max_errors=4)
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    assert (await client.command(b"\x00\xff\xfe garbage \x1b[31m")).startswith("500 5.5.2")
    await client.send(b"NOOP " + b"A" * (4 * 1024 * 1024) + b"\r\n")
    assert (await client.reply()) == "500 5.5.2 Error: line too long"
    assert (await client.command("NOOP")).startswith("250")
    assert (await client.command("HELO")).startswith("501")
    assert (await client.command("XYZZY")).startswith("421 4.7.0")
    assert await client.closed()


async def test_a_silent_client_gets_421_after_the_idle_timeout(
    make_listener: MakeListener, client_ip: str
) -> None:
    listener = await make_listener(idle_timeout_s=0.3)
    client = await RawClient.connect(listener.address, source=client_ip)
    assert (await client.reply()).startswith("220")
    assert (await client.reply()) == f"421 4.4.2 {HOSTNAME} Error: timeout exceeded"
    assert await client.closed()
    assert listener.sessions == 0


async def test_the_listener_serves_others_while_clients_misbehave(
    make_listener: MakeListener,
    gated_store: GatedStore,
    harness_pool: loopback.LoopbackPool,
) -> None:
    listener = await make_listener(idle_timeout_s=30)
    silent = await RawClient.connect(listener.address, source=harness_pool.take())
    await silent.reply()
    flooding = await RawClient.connect(listener.address, source=harness_pool.take())
    await flooding.reply()
    await flooding.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    await flooding.send(b"y" * (2 * 1024 * 1024))  # a huge data line, never ended
    trickling = await RawClient.connect(listener.address, source=harness_pool.take())
    await trickling.reply()
    await trickling.send(b"EH")

    good_ip = harness_pool.take()
    async with smtplib_client(listener, good_ip) as client:
        _errors, reply = await client.sendmail("a@origin.test", ["b@example.test"], BODY)
    assert "queued as" in reply
    (message,) = await gated_store.list_messages()
    assert message.received_from_ip == good_ip
    assert listener.sessions == 3
    for client_ in (silent, flooding, trickling):
        await client_.close()


async def test_max_sessions_turns_further_clients_away_with_421(
    make_listener: MakeListener, harness_pool: loopback.LoopbackPool
) -> None:
    listener = await make_listener(max_sessions=1)
    first = await RawClient.connect(listener.address, source=harness_pool.take())
    await first.reply()
    second = await RawClient.connect(listener.address, source=harness_pool.take())
    assert (await second.reply()).startswith("421 4.7.0")
    assert await second.closed()
    await first.close()


async def test_stop_answers_idle_sessions_421_and_lets_a_queuing_one_finish(
    make_listener: MakeListener, gated_store: GatedStore, harness_pool: loopback.LoopbackPool
) -> None:
    listener = await make_listener()
    idle = await RawClient.connect(listener.address, source=harness_pool.take())
    await idle.reply()
    gated_store.gate.clear()
    async with smtplib_client(listener, harness_pool.take()) as client:
        sending = asyncio.create_task(client.sendmail("a@origin.test", ["b@example.test"], BODY))
        await gated_store.entered.wait()
        stopping = asyncio.create_task(listener.stop())
        assert (await idle.reply()).startswith("421 4.3.2")
        gated_store.gate.set()
        _errors, reply = await sending
        await stopping
    assert "queued as" in reply
    assert len(await gated_store.list_messages()) == 1


# ---- STARTTLS and AUTH ---------------------------------------------------------------------


@pytest.fixture
def client_tls(harness_ca_file: Path) -> ssl.SSLContext:
    """A verifying client context trusting the harness CA."""
    return smtp_tls.pkix_context(str(harness_ca_file))


async def test_starttls_with_our_client_queues_requiretls_and_traces_tls(
    make_listener: MakeListener,
    gated_store: GatedStore,
    client_ip: str,
    tls_files: tuple[Path, Path],
    client_tls: ssl.SSLContext,
) -> None:
    cert, key = tls_files
    listener = await make_listener(tls_cert=cert, tls_key=key)
    session = await connect(listener, client_ip)
    assert session.supports("STARTTLS") and not session.supports("REQUIRETLS")
    info = await session.starttls(client_tls, server_hostname=HOSTNAME, timeout_ms=5000)
    await session.ehlo("client.test")
    assert session.supports("REQUIRETLS") and not session.supports("STARTTLS")
    envelope = esmtp.Envelope(
        "a@origin.test", (esmtp.Recipient("b@example.test"),), requiretls=True
    )
    result = await session.send(envelope, BODY)
    await session.quit()
    assert [r.code for _, r in result.per_recipient()] == [250]
    (message,) = await gated_store.list_messages()
    assert message.requiretls
    trace = (await gated_store.load_body(message.id)).replace(b"\r\n\t", b" ").decode()
    assert f"with ESMTPS (using {info.version} with cipher {info.cipher})" in trace


async def test_plaintext_injected_after_starttls_is_never_read_as_a_command(
    make_listener: MakeListener,
    gated_store: GatedStore,
    client_ip: str,
    tls_files: tuple[Path, Path],
    client_tls: ssl.SSLContext,
) -> None:
    cert, key = tls_files
    listener = await make_listener(tls_cert=cert, tls_key=key)
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    await client.command("EHLO client.test")
    await client.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<x@evil.test>\r\n")
    assert (await client.reply()).startswith("220")
    await client.starttls(client_tls, HOSTNAME)
    # Had the injected commands been kept, the first reply inside TLS would answer them (503).
    assert (await client.command("NOOP")).startswith("250")
    assert (await client.command("MAIL FROM:<a@origin.test>")).startswith("503")
    await client.close()


async def test_a_failed_handshake_ends_only_that_session(
    make_listener: MakeListener, client_ip: str, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    listener = await make_listener(tls_cert=cert, tls_key=key, tls_handshake_timeout_s=1)
    client = await RawClient.connect(listener.address, source=client_ip)
    await client.reply()
    await client.command("EHLO client.test")
    assert (await client.command("STARTTLS")).startswith("220")
    await client.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert await client.closed()
    other = await RawClient.connect(listener.address, source=client_ip)
    assert (await other.reply()).startswith("220")
    await other.close()


async def test_auth_over_starttls_marks_the_message_authenticated(
    make_listener: MakeListener,
    gated_store: GatedStore,
    client_ip: str,
    tls_files: tuple[Path, Path],
    client_tls: ssl.SSLContext,
) -> None:
    cert, key = tls_files
    listener = await make_listener(tls_cert=cert, tls_key=key, credentials=USERS, require_auth=True)
    async with smtplib_client(listener, client_ip) as client:
        await client.ehlo()
        assert not client.supports_extension("auth")  # never offered in clear text
        await client.starttls(tls_context=client_tls, server_hostname=HOSTNAME)
        await client.ehlo()
        assert client.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("a@origin.test", ["b@example.test"], BODY)
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await client.login("app", "guess")
        assert wrong.value.code == 535
        await client.login("app", SECRET)
        await client.sendmail("a@origin.test", ["b@example.test"], BODY)
    (message,) = await gated_store.list_messages()
    assert message.source is model.MessageSource.AUTHENTICATED
    trace = (await gated_store.load_body(message.id)).replace(b"\r\n\t", b" ")
    assert b"with ESMTPSA" in trace


async def test_auth_in_clear_only_when_allowed(
    make_listener: MakeListener, gated_store: GatedStore, client_ip: str
) -> None:
    listener = await make_listener(credentials=USERS, auth_in_clear=True)
    async with smtplib_client(listener, client_ip) as client:
        await client.login("app", SECRET)
        await client.sendmail("a@origin.test", ["b@example.test"], BODY)
    (message,) = await gated_store.list_messages()
    assert message.source is model.MessageSource.AUTHENTICATED


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"networks": ["not-a-network"]}, "submission.networks"),
        ({"tls_cert": "/nonexistent/cert.pem"}, "submission.tls_key"),
        (
            {"tls_cert": "/nonexistent/c.pem", "tls_key": "/nonexistent/k.pem"},
            "submission.tls_cert",
        ),
        ({"require_auth": True}, "submission.require_auth"),
        ({"max_message_bytes": 0}, "submission.max_message_size"),
    ],
)
def test_invalid_options_name_the_setting(
    gated_store: GatedStore, options: dict[str, object], field: str
) -> None:
    async def plan(
        message: model.NewMessage, requests: list[RecipientRequest], /
    ) -> list[model.NewRecipient]:
        return []

    with pytest.raises(ConfigError) as error:
        SubmissionListener(gated_store, plan, hostname=HOSTNAME, **options)  # type: ignore[arg-type]
    assert error.value.field == field
