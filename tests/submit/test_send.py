"""`delivery send`: a message from stdin or a file goes straight into the queue store of the
settings, planned by the registry's ``schedule`` expression; bad input is refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from delivery.cli.send import send_command
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore

HOSTNAME = "mta.send.test"
DAY_MS = 86_400_000
MESSAGE = b"From: app@example.org\nSubject: hello\n\n.a dot line\nbye\n"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    """Settings naming a database under the test's folder, and one local domain."""
    path = tmp_path / "delivery.toml"
    path.write_text(
        f'hostname = "{HOSTNAME}"\n'
        f'[store]\nurl = "sqlite://{tmp_path}/data/delivery.db"\n'
        '[local]\ndomains = ["example.org"]\n'
        '[dns]\nnameservers = ["127.0.0.1:53"]\n'
    )
    return path


def send(settings_file: Path, *args: str, stdin: bytes = MESSAGE) -> Result:
    environ = {name: None for name in os.environ if name.startswith("DELIVERY_")}
    return CliRunner().invoke(
        send_command, ["--config", str(settings_file), *args], input=stdin, env=environ
    )


def queued(settings_file: Path) -> list[tuple[model.QueuedMessage, bytes]]:
    """Every queued message with its body, read from the store the settings name."""

    async def read() -> list[tuple[model.QueuedMessage, bytes]]:
        store = await SqliteQueueStore.open(settings_file.parent / "data" / "delivery.db")
        try:
            return [(m, await store.load_body(m.id)) for m in await store.list_messages()]
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_message_from_stdin_is_queued_and_its_id_printed(settings_file: Path) -> None:
    result = send(
        settings_file, "--from", "app@example.org", "--to", "b@Example.com", "--to", "c@example.org"
    )
    assert result.exit_code == 0, result.output
    ((message, body),) = queued(settings_file)
    assert result.stdout.strip() == message.id
    assert (message.sender, message.source) == (
        "app@example.org",
        model.MessageSource.AUTHENTICATED,
    )
    assert (message.received_from_ip, message.received_via_port) == ("", 0)
    assert (message.env_id, message.ret, message.requiretls, message.smtputf8) == (
        None,
        None,
        False,
        False,
    )
    assert [(r.address, r.schedule, r.queue, r.notify) for r in message.recipients] == [
        ("b@Example.com", "remote", "remote", frozenset()),
        ("c@example.org", "local", "local", frozenset()),
    ]
    assert all(r.expires_at == message.received_at + 3 * DAY_MS for r in message.recipients)
    trace, _, rest = body.partition(b"\r\nFrom: ")
    assert trace.replace(b"\r\n\t", b" ").startswith(
        f"Received: by {HOSTNAME} (delivery send, uid {os.getuid()});".encode()
    )
    assert rest == b"app@example.org\r\nSubject: hello\r\n\r\n.a dot line\r\nbye\r\n"


def test_a_file_with_dsn_and_requiretls_options(settings_file: Path, tmp_path: Path) -> None:
    eml = tmp_path / "message.eml"
    eml.write_bytes("Subject: café\r\n\r\nünïcode\r\n".encode())
    result = send(
        settings_file,
        "--from", "<>",
        "--to", "jörg@example.com",
        "--to", "jörg@EXAMPLE.com",
        "--notify", "failure,delay",
        "--ret", "hdrs",
        "--envid", "batch 7+1",
        "--requiretls",
        str(eml),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((message, body),) = queued(settings_file)
    assert message.sender == ""
    assert (message.env_id, message.ret, message.requiretls) == (
        "batch+207+2B1",
        model.Ret.HDRS,
        True,
    )
    assert (message.smtputf8, message.eightbitmime) == (True, True)
    (recipient,) = message.recipients  # the same address twice is queued once
    assert recipient.notify == frozenset({model.Notify.FAILURE, model.Notify.DELAY})
    assert body.endswith("Subject: café\r\n\r\nünïcode\r\n".encode())


BAD_INPUT = [  # (label, arguments, what stderr names)
    ("space in the local part", ["--to", "bob smith@example.com"], "--to: 'bob smith@example.com'"),
    ("no domain", ["--to", "bob@"], "the domain after @ is empty"),
    ("CR inside", ["--to", "bob\r@example.com"], "control character"),
    ("LF inside", ["--to", "bob@example.com\nRCPT TO:<x@y>"], "control character"),
    ("empty recipient", ["--to", ""], "it is empty"),
    (
        "bad sender",
        ["--to", "b@example.com", "--from", "a@@example.org"],
        "--from: 'a@@example.org'",
    ),
    ("NEVER with others", ["--to", "b@example.com", "--notify", "NEVER,DELAY"], "--notify"),
    ("unknown NOTIFY", ["--to", "b@example.com", "--notify", "SOMETIMES"], "SOMETIMES"),
    ("non-ASCII ENVID", ["--to", "b@example.com", "--envid", "lötter"], "--envid"),
]


@pytest.mark.parametrize(("label", "args", "named"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_exits_2_naming_it_and_queues_nothing(
    settings_file: Path, label: str, args: list[str], named: str
) -> None:
    if "--from" not in args:
        args = ["--from", "app@example.org", *args]
    result = send(settings_file, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and named in result.stderr
    assert not (settings_file.parent / "data").exists()  # the store was never even opened


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nurl = "mysql://x"\n')
    result = send(bad, "--from", "a@example.org", "--to", "b@example.com")
    assert result.exit_code == 2 and "store.url" in result.stderr
