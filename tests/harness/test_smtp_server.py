"""SMTP receivers with real clients: openssl s_client and aiosmtplib see each TLS mode, the
scripted replies and the records."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from delivery.harness.smtp_script import Extensions, Limits, RcptRule, Reply, Script, Step
from delivery.harness.smtp_server import SmtpReceiver

MX = "mx1.example.test"
MakeReceiver = Callable[..., Awaitable[SmtpReceiver]]


@pytest.fixture
def tls_context(harness_ca_file: Path) -> ssl.SSLContext:
    """A verifying client context that trusts only the harness CA."""
    return ssl.create_default_context(cafile=str(harness_ca_file))


def client(mx: SmtpReceiver, **options: Any) -> aiosmtplib.SMTP:
    host, port = mx.address
    options.setdefault("timeout", 5)
    return aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=False, local_hostname="client.test", **options
    )


async def s_client(mx: SmtpReceiver, ca_file: Path) -> tuple[int, str]:
    """openssl s_client -starttls smtp against the receiver, verifying name and chain."""
    host, port = mx.address
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-starttls", "smtp", "-connect", f"{host}:{port}",
        "-servername", mx.hostname, "-verify_hostname", mx.hostname,
        "-CAfile", str(ca_file), "-verify_return_error",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate(b"QUIT\r\n")
    return process.returncode or 0, output.decode(errors="replace")


OPENSSL_CASES = [  # (mode, what s_client prints, None: verification succeeds)
    ("valid", None),
    ("self-signed", "self-signed certificate"),
    ("expired", "certificate has expired"),
    ("not-yet-valid", "certificate is not yet valid"),
    ("wrong-name", "hostname mismatch"),
    ("unknown-ca", "unable to get local issuer certificate"),
    ("no-server-auth", "unsuitable certificate purpose"),
]


@pytest.mark.parametrize(("mode", "error"), OPENSSL_CASES)
async def test_openssl_sees_each_certificate_mode(
    make_receiver: MakeReceiver, harness_ca_file: Path, mode: str, error: str | None
) -> None:
    mx = await make_receiver(MX, tls=mode)
    status, output = await s_client(mx, harness_ca_file)
    (session,) = await mx.wait_for_connections(1, closed=True)
    if error is None:
        assert status == 0, output
        assert "Verify return code: 0 (ok)" in output
        assert session.tls is not None and session.tls.version.startswith("TLSv1.")
        assert mx.tls_used
    else:
        assert status != 0
        assert "Verify return code: " in output and error in output, output
        assert session.tls is None and session.tls_error is not None
        assert not mx.tls_used
    assert session.commands[-1] == "STARTTLS"


async def test_openssl_broken_handshake_fails_after_220(
    make_receiver: MakeReceiver, harness_ca_file: Path
) -> None:
    mx = await make_receiver(MX, tls="broken")
    status, output = await s_client(mx, harness_ca_file)
    (session,) = await mx.wait_for_connections(1, closed=True)
    assert status != 0
    assert "Cipher is (NONE)" in output or "Cipher is" not in output
    assert "STARTTLS" in session.commands
    assert session.tls is None and "broken" in (session.tls_error or "")


async def test_openssl_finds_no_starttls_in_mode_none(
    make_receiver: MakeReceiver, harness_ca_file: Path
) -> None:
    mx = await make_receiver(MX, tls="none")
    status, output = await s_client(mx, harness_ca_file)
    assert status != 0
    assert "Didn't find STARTTLS" in output


async def test_message_over_verified_tls_is_recorded_exactly(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext
) -> None:
    mx = await make_receiver(MX, tls="valid")
    body = b"Subject: test\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n"
    async with client(mx) as smtp:
        await smtp.starttls(server_hostname=MX, tls_context=tls_context)
        await smtp.sendmail(
            "sender@origin.test",
            ["a@example.test", "b@example.test"],
            body,
            mail_options=["BODY=8BITMIME", "RET=HDRS"],
            rcpt_options=["NOTIFY=FAILURE,DELAY"],
        )
    (message,) = await mx.wait_for_messages(1)
    assert message.mail_from == "sender@origin.test"
    assert message.rcpt_tos == ["a@example.test", "b@example.test"]
    assert dict(message.rcpts[1].params) == {"NOTIFY": "FAILURE,DELAY"}
    assert message.mail_params["BODY"] == "8BITMIME" and message.mail_params["RET"] == "HDRS"
    assert message.body == body
    assert message.ehlo == "client.test"
    assert message.tls is not None and message.tls.version == "TLSv1.3" and message.tls.cipher
    assert message.peer[0] == "127.0.0.1"
    assert mx.commands[:3] == ["EHLO client.test", "STARTTLS", "EHLO client.test"]
    assert mx.connections == 1 and mx.tls_used


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("self-signed", "self-signed certificate"),
        ("expired", "certificate has expired"),
        ("wrong-name", "Hostname mismatch"),
        ("unknown-ca", "unable to get local issuer certificate"),
    ],
)
async def test_aiosmtplib_refuses_each_bad_certificate(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext, mode: str, reason: str
) -> None:
    mx = await make_receiver(MX, tls=mode)
    smtp = client(mx)
    await smtp.connect()
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        await smtp.starttls(server_hostname=MX, tls_context=tls_context)
    smtp.close()
    assert mx.received == []


async def test_aiosmtplib_without_verification_delivers_over_a_bad_certificate(
    make_receiver: MakeReceiver,
) -> None:
    mx = await make_receiver(MX, tls="expired")
    async with client(mx, validate_certs=False) as smtp:
        await smtp.starttls()
        await smtp.sendmail("a@x.test", ["b@example.test"], b"x\r\n")
    (message,) = await mx.wait_for_messages()
    assert message.tls is not None


async def test_mode_none_offers_no_starttls_and_takes_clear_text(
    make_receiver: MakeReceiver,
) -> None:
    mx = await make_receiver(MX, tls="none")
    async with client(mx) as smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("starttls")
        await smtp.sendmail("a@x.test", ["b@example.test"], b"clear\r\n")
    (message,) = await mx.wait_for_messages()
    assert message.tls is None and not mx.tls_used


async def test_broken_mode_fails_the_handshake_for_aiosmtplib(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext
) -> None:
    mx = await make_receiver(MX, tls="broken")
    smtp = client(mx)
    await smtp.connect()
    with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException)):
        await smtp.starttls(server_hostname=MX, tls_context=tls_context)
    smtp.close()


STAGE_CASES = [  # (script, what aiosmtplib raises, the code it carries)
    (Script(greeting=Step(Reply(554, "5.3.2 go away"))), aiosmtplib.SMTPConnectError, 554),
    (Script(ehlo=Step(Reply(550, "5.7.1 no EHLO"))), aiosmtplib.SMTPHeloError, 550),
    (Script(mail=Step(Reply(451, "4.3.0 later"))), aiosmtplib.SMTPSenderRefused, 451),
    (
        Script(rcpt=(RcptRule("*@fail.test", Step(Reply(550, "5.1.1 unknown"))),)),
        aiosmtplib.SMTPRecipientRefused,
        550,
    ),
    (Script(data=Step(Reply(554, "5.5.0 no data"))), aiosmtplib.SMTPDataError, 554),
    (Script(end_of_data=Step(Reply(452, "4.3.1 full"))), aiosmtplib.SMTPDataError, 452),
]


@pytest.mark.parametrize(("script", "error", "code"), STAGE_CASES)
async def test_scripted_reply_at_each_stage(
    make_receiver: MakeReceiver, script: Script, error: type[Exception], code: int
) -> None:
    mx = await make_receiver(MX, script=script)
    smtp = client(mx)
    with pytest.raises(error) as raised:
        await smtp.connect()
        await smtp.ehlo()
        await smtp.mail("a@x.test")
        await smtp.rcpt("b@fail.test")
        await smtp.data(b"x\r\n")
    smtp.close()
    assert isinstance(raised.value, aiosmtplib.SMTPResponseException)
    assert raised.value.code == code
    assert mx.received == []


async def test_per_recipient_rules_reject_some_and_accept_the_rest(
    make_receiver: MakeReceiver,
) -> None:
    script = Script(rcpt=(RcptRule("*@fail.test", Step(Reply(550, "5.1.1 unknown"))),))
    mx = await make_receiver(MX, script=script)
    async with client(mx) as smtp:
        refused, _ = await smtp.sendmail("a@x.test", ["b@fail.test", "c@ok.test"], b"x\r\n")
    assert refused["b@fail.test"].code == 550
    (message,) = await mx.wait_for_messages()
    assert message.rcpt_tos == ["c@ok.test"]


async def test_slow_greeting_trips_the_client_timeout(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, script=Script(greeting=Step(delay=2.0)))
    smtp = client(mx, timeout=0.2)
    with pytest.raises(aiosmtplib.SMTPConnectTimeoutError):
        await smtp.connect()
    smtp.close()


async def test_dropped_connection_at_rcpt(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, script=Script(rcpt=(RcptRule("*", Step(close=True)),)))
    smtp = client(mx)
    await smtp.connect()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    (session,) = await mx.wait_for_connections(1, closed=True)
    assert session.commands[-1] == "RCPT TO:<b@y.test>"


async def test_the_script_can_change_between_connections(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, script=Script(mail=Step(Reply(451, "4.3.0 later"))))
    async with client(mx) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    mx.script = Script()
    async with client(mx) as smtp:
        await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    await mx.wait_for_messages(1)
    assert mx.connections == 2


async def test_end_sessions_closes_open_connections_and_keeps_listening(
    make_receiver: MakeReceiver,
) -> None:
    mx = await make_receiver(MX, script=Script(mail=Step(Reply(451, "4.3.0 later"))))
    held = client(mx)
    await held.connect()
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        await held.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    mx.script = Script()
    await mx.end_sessions()  # the held connection would keep the 451 script
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await held.noop()
    async with client(mx) as smtp:
        await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    await mx.wait_for_messages(1)
    assert mx.connections == 2 and all(session.closed for session in mx.sessions[:1])


async def test_awaiting_messages_is_an_event(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX)

    async def send_two() -> None:
        async with client(mx) as smtp:
            for n in range(2):
                await smtp.sendmail("a@x.test", [f"r{n}@y.test"], b"x\r\n")

    sender = asyncio.create_task(send_two())
    messages = await mx.wait_for_messages(2)
    await sender
    assert [m.rcpt_tos for m in messages] == [["r0@y.test"], ["r1@y.test"]]


async def test_awaiting_too_long_names_what_was_missing(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX)
    with pytest.raises(TimeoutError, match=r"mx1.example.test: waited 0.05s for 1 message"):
        await mx.wait_for_messages(1, within=0.05)


async def test_smtputf8_and_requiretls_as_advertised(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext
) -> None:
    mx = await make_receiver(MX, tls="valid", extensions=Extensions(requiretls=True))
    async with client(mx) as smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("requiretls")  # only inside TLS
        await smtp.starttls(server_hostname=MX, tls_context=tls_context)
        await smtp.ehlo()
        assert smtp.supports_extension("requiretls") and smtp.supports_extension("smtputf8")
        await smtp.sendmail(
            "josé@x.test",
            ["ü@example.test"],
            "Subject: ü\r\n\r\nü\r\n".encode(),
            mail_options=["SMTPUTF8", "REQUIRETLS"],
        )
    (message,) = await mx.wait_for_messages()
    assert (message.mail_from, message.rcpt_tos) == ("josé@x.test", ["ü@example.test"])
    assert "REQUIRETLS" in message.mail_params and "SMTPUTF8" in message.mail_params


async def test_advertised_size_is_enforced(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, extensions=Extensions(size=100))
    async with client(mx) as smtp:
        await smtp.ehlo()
        assert smtp.esmtp_extensions["size"] == "100"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as raised:
            await smtp.sendmail("a@x.test", ["b@y.test"], b"x" * 200 + b"\r\n")
    assert raised.value.code == 552


async def raw_session(mx: SmtpReceiver) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = mx.address
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()  # greeting
    return reader, writer


async def read_reply(reader: asyncio.StreamReader) -> list[bytes]:
    lines = [await reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    return lines


async def test_chunking_with_bdat(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, extensions=Extensions(chunking=True))
    reader, writer = await raw_session(mx)
    writer.write(b"EHLO raw.test\r\n")
    assert b"250 CHUNKING\r\n" in await read_reply(reader)
    writer.write(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    writer.write(b"BDAT 6\r\n.dot\r\nBDAT 4 LAST\r\nend\n")
    replies = [await reader.readline() for _ in range(4)]
    assert [r[:3] for r in replies] == [b"250"] * 4
    writer.close()
    (message,) = await mx.wait_for_messages()
    assert (message.body, message.chunked) == (b".dot\r\nend\n", True)


async def test_plaintext_pipelined_after_starttls_is_never_read_as_a_command(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext
) -> None:
    mx = await make_receiver(MX, tls="valid")
    reader, writer = await raw_session(mx)
    writer.write(b"EHLO raw.test\r\n")
    await read_reply(reader)
    writer.write(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert (await reader.readline()).startswith(b"220")
    await writer.start_tls(tls_context, server_hostname=MX)
    writer.write(b"MAIL FROM:<a@x.test>\r\n")
    assert (await reader.readline()).startswith(b"503")  # EHLO again first: RFC 3207 §4.2
    writer.close()
    (session,) = await mx.wait_for_connections(1, closed=True)
    assert "MAIL FROM:<injected@evil.test>" not in session.commands
    assert session.discarded_bytes == len(b"MAIL FROM:<injected@evil.test>\r\n")


async def test_idle_session_gets_421_and_is_closed(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX, limits=Limits(idle_timeout_s=0.1))
    reader, writer = await raw_session(mx)
    assert (await reader.readline()).startswith(b"421 4.4.2")
    assert await reader.read() == b""
    writer.close()


async def test_stop_ends_open_sessions(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX)
    reader, writer = await raw_session(mx)
    await mx.stop()
    assert await reader.read() == b""
    writer.close()
    assert mx.sessions[0].closed


async def test_reset_forgets_the_records(make_receiver: MakeReceiver) -> None:
    mx = await make_receiver(MX)
    async with client(mx) as smtp:
        await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    await mx.wait_for_messages()
    mx.reset()
    assert (mx.received, mx.commands, mx.connections) == ([], [], 0)


async def test_only_loopback_addresses(make_receiver: MakeReceiver) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        await make_receiver(MX, host="0.0.0.0")
    receiver = await make_receiver(MX, host="::1")
    assert receiver.address[0] == "::1"


async def test_scripted_starttls_refusal(
    make_receiver: MakeReceiver, tls_context: ssl.SSLContext
) -> None:
    script = Script(starttls=Step(Reply(454, "4.7.0 TLS not available due to local problem")))
    mx = await make_receiver(MX, tls="valid", script=script)
    async with client(mx) as smtp:
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await smtp.starttls(server_hostname=MX, tls_context=tls_context)
        assert raised.value.code == 454
        await smtp.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
    (message,) = await mx.wait_for_messages()
    assert message.tls is None


def test_certificate_modes_need_a_credential() -> None:
    with pytest.raises(ValueError, match="needs a credential"):
        SmtpReceiver(MX, tls="valid")
    with pytest.raises(ValueError, match="unknown TLS mode"):
        SmtpReceiver(MX, tls="bogus")  # type: ignore[arg-type]
