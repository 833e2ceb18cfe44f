"""The SMTP server core (sans-I/O): tables of command sequences and the replies they get."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from delivery.smtp import server
from delivery.smtp.server import (
    ACCEPT,
    Action,
    Authenticate,
    Close,
    Decision,
    Deliver,
    Extensions,
    Limits,
    ReceivedMessage,
    Reply,
    Seen,
    Send,
    ServerDialogue,
    StartTls,
    TlsInfo,
    mailbox_problem,
)

PEER = ("127.0.0.9", 40000)
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
MAIL = ["EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.test>"]
SECRETS = {"alice": "s3cret pass"}
AUTH_EXT = Extensions(auth=("PLAIN", "LOGIN"))


class Refusing(server.Policy):
    """A policy that refuses what the test names, as a submission policy would."""

    def __init__(self, **decisions: Decision) -> None:
        self.decisions = decisions

    def greeting(self, session: ServerDialogue, /) -> Decision:
        return self.decisions.get("greeting", ACCEPT)

    def mail(
        self, session: ServerDialogue, sender: str, params: Mapping[str, str | None], /
    ) -> Decision:
        return self.decisions.get("mail", ACCEPT)

    def rcpt(
        self, session: ServerDialogue, address: str, params: Mapping[str, str | None], /
    ) -> Decision:
        return self.decisions.get(address, ACCEPT)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dialogue(**options: Any) -> ServerDialogue:
    return ServerDialogue(hostname="mta.example.test", peer=PEER, **options)


def resolve(
    d: ServerDialogue, actions: list[Action], end_of_data: Decision = ACCEPT
) -> list[Action]:
    """The actions with pending steps answered: credentials from SECRETS, data by the decision."""
    done: list[Action] = []
    todo = list(actions)
    while todo:
        action = todo.pop(0)
        done.append(action)
        if isinstance(action, Authenticate):
            todo += d.authenticated(SECRETS.get(action.identity) == action.secret)
        elif isinstance(action, Deliver):
            todo += d.delivered(end_of_data)
    return done


def feed_lines(d: ServerDialogue, lines: list[str], end_of_data: Decision = ACCEPT) -> list[Action]:
    actions = resolve(d, d.greet())
    for line in lines:
        actions += resolve(d, d.feed(line.encode() + b"\r\n"), end_of_data)
    return actions


def codes(actions: list[Action]) -> list[int]:
    """The code of each reply sent, in order."""
    return [int(a.lines[-1][:3]) for a in actions if isinstance(a, Send)]


def delivered(actions: list[Action]) -> list[ReceivedMessage]:
    return [a.message for a in actions if isinstance(a, Deliver)]


Case = tuple[str, dict[str, Any], list[str], list[int]]


def case(label: str, lines: list[str], expected: list[int], **options: Any) -> Case:
    """(label, ServerDialogue options, client lines, reply codes with the greeting first)."""
    return (label, options, lines, expected)


REFUSE_MAIL = Decision(Reply(530, "5.7.0 Authentication required"))
BAD_RCPT = Decision(Reply(501, "5.1.3 Bad recipient address syntax"), error=True)

CASES = [
    case(
        "a whole transaction",
        [*MAIL, "DATA", "hi", ".", "QUIT"],
        [220, 250, 250, 250, 354, 250, 221],
    ),
    case(
        "HELO then a transaction", ["HELO c", "MAIL FROM:<a@x>", "RCPT TO:<b@y>"], [220] + [250] * 3
    ),
    case("MAIL before EHLO", ["MAIL FROM:<a@x.test>"], [220, 503]),
    case("RCPT before MAIL", ["EHLO c", "RCPT TO:<b@x.test>"], [220, 250, 503]),
    case("DATA before RCPT", ["EHLO c", "MAIL FROM:<a@x.test>", "DATA"], [220, 250, 250, 554]),
    case("nested MAIL", ["EHLO c", "MAIL FROM:<a@x>", "MAIL FROM:<a@x>"], [220, 250, 250, 503]),
    case("path without brackets", ["EHLO c", "MAIL FROM:a@x.test"], [220, 250, 501]),
    case("null sender", ["EHLO c", "MAIL FROM:<>"], [220, 250, 250]),
    case("empty recipient", ["EHLO c", "MAIL FROM:<>", "RCPT TO:<>"], [220, 250, 250, 501]),
    case("unknown command", ["EHLO c", "XYZZY"], [220, 250, 500]),
    case("EHLO without a name", ["EHLO"], [220, 501]),
    case("RSET ends the transaction", [*MAIL, "RSET", "DATA"], [220, 250, 250, 250, 250, 503]),
    case("NOOP and VRFY", ["NOOP", "VRFY bob"], [220, 250, 252]),
    case("DATA with an argument", [*MAIL, "DATA now"], [220, 250, 250, 250, 501]),
    case("parameters after HELO", ["HELO c", "MAIL FROM:<a@x> SIZE=10"], [220, 250, 555]),
    case("unknown MAIL parameter", ["EHLO c", "MAIL FROM:<a@x> FOO=bar"], [220, 250, 555]),
    case("RCPT parameter not DSN", [*MAIL[:2], "RCPT TO:<b@y> FOO=1"], [220, 250, 250, 555]),
    case("duplicate parameter", ["EHLO c", "MAIL FROM:<a@x> SIZE=1 SIZE=2"], [220, 250, 501]),
    case("SIZE not a number", ["EHLO c", "MAIL FROM:<a@x> SIZE=1k"], [220, 250, 501]),
    case("SIZE in non-ASCII digits", ["EHLO c", "MAIL FROM:<a@x> SIZE=²"], [220, 250, 501]),
    case(
        "SIZE over the limit",
        ["EHLO c", "MAIL FROM:<a@x> SIZE=1001"],
        [220, 250, 552],
        extensions=Extensions(size=1000),
    ),
    case("bad BODY", ["EHLO c", "MAIL FROM:<a@x> BODY=BINARYMIME"], [220, 250, 501]),
    case("bad RET", ["EHLO c", "MAIL FROM:<a@x> RET=ALL"], [220, 250, 501]),
    case("ENVID not xtext", ["EHLO c", "MAIL FROM:<a@x> ENVID=a+zz"], [220, 250, 501]),
    case("SMTPUTF8 with a value", ["EHLO c", "MAIL FROM:<a@x> SMTPUTF8=yes"], [220, 250, 501]),
    case("bad NOTIFY", [*MAIL[:2], "RCPT TO:<b@y> NOTIFY=NEVER,DELAY"], [220, 250, 250, 501]),
    case("ORCPT without a type", [*MAIL[:2], "RCPT TO:<b@y> ORCPT=b@y"], [220, 250, 250, 501]),
    case(
        "DSN not advertised",
        ["EHLO c", "MAIL FROM:<a@x> RET=HDRS"],
        [220, 250, 555],
        extensions=Extensions(dsn=False),
    ),
    case(
        "REQUIRETLS in clear text",
        ["EHLO c", "MAIL FROM:<a@x> REQUIRETLS"],
        [220, 250, 555],
        extensions=Extensions(requiretls=True),
    ),
    case("non-ASCII sender, no SMTPUTF8", ["EHLO c", "MAIL FROM:<ü@x.test>"], [220, 250, 553]),
    case(
        "non-ASCII sender, SMTPUTF8", ["EHLO c", "MAIL FROM:<ü@x.test> SMTPUTF8"], [220, 250, 250]
    ),
    case("STARTTLS not offered", ["EHLO c", "STARTTLS"], [220, 250, 502]),
    case("STARTTLS in a transaction", [*MAIL[:2], "STARTTLS"], [220, 250, 250, 503], starttls=True),
    case("BDAT not advertised", [*MAIL, "BDAT 3 LAST"], [220, 250, 250, 250, 500]),
    case(
        "BDAT size in non-ASCII digits",
        [*MAIL, "BDAT ² LAST"],
        [220, 250, 250, 250, 501],
        extensions=Extensions(chunking=True),
    ),
    case(
        "too many recipients",
        [*MAIL, "RCPT TO:<c@y>"],
        [220, 250, 250, 250, 452],
        limits=Limits(max_recipients=1),
    ),
    case(
        "too many errors",
        ["X", "Y", "Z", "NOOP"],
        [220, 500, 500, 421],
        limits=Limits(max_errors=3),
    ),
    case(
        "refused greeting: 503 until QUIT",
        ["EHLO c", "QUIT"],
        [554, 503, 221],
        policy=Refusing(greeting=Decision(Reply(554, "5.7.1 no"))),
    ),
    case(
        "policy refuses MAIL: no transaction",
        ["EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@y>"],
        [220, 250, 530, 503],
        policy=Refusing(mail=REFUSE_MAIL),
    ),
    case(
        "policy refusals count as errors",
        [*MAIL[:2], "RCPT TO:<bad>", "RCPT TO:<bad>", "RCPT TO:<bad>"],
        [220, 250, 250, 501, 501, 421],
        policy=Refusing(bad=BAD_RCPT),
        limits=Limits(max_errors=3),
    ),
    case("AUTH not offered: unknown", ["EHLO c", "AUTH PLAIN"], [220, 250, 500]),
    case(
        "AUTH offered only inside TLS",
        ["EHLO c", f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret pass')}"],
        [220, 250, 530],
        extensions=AUTH_EXT,
    ),
]


@pytest.mark.parametrize(
    ("label", "options", "lines", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_replies(
    label: str, options: dict[str, Any], lines: list[str], expected: list[int]
) -> None:
    assert codes(feed_lines(dialogue(**options), lines)) == expected


# ---- control characters and encodings in addresses -----------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "text"),
    [
        (b"MAIL FROM:<a\rb@x.test>", 501, "5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@x.test\r>", 501, "5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a\x00@x.test>", 501, "5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<\xff@x.test> SMTPUTF8", 501, "not valid UTF-8"),
        (b"EHLO c\rRCPT TO:<evil@x>", 501, "Syntax: EHLO"),
    ],
)
def test_control_characters_and_bad_utf8_are_refused_before_any_policy(
    line: bytes, code: int, text: str
) -> None:
    d = dialogue(policy=Refusing())
    actions = d.greet() + d.feed(b"EHLO c\r\n" if not line.startswith(b"EHLO") else b"")
    actions += d.feed(line + b"\r\n")
    last = [a for a in actions if isinstance(a, Send)][-1]
    assert int(last.lines[0][:3]) == code and text in last.lines[0]


def test_cr_inside_a_recipient_is_refused() -> None:
    d = dialogue()
    actions = resolve(d, d.greet() + d.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n"))
    actions += d.feed(b"RCPT TO:<b\r@y>\r\nDATA\r\n")
    assert codes(actions)[-2:] == [501, 554]
    assert (
        "5.1.3 Bad recipient address syntax"
        in [a for a in actions if isinstance(a, Send)][-2].lines[0]
    )


# ---- parameters as sent ---------------------------------------------------------------------


def test_every_parameter_is_kept_with_its_case() -> None:
    d = dialogue(starttls=True, extensions=Extensions(requiretls=True, chunking=True))
    d.greet()
    d.feed(b"EHLO c\r\nSTARTTLS\r\n")
    d.tls_started(TLS)
    actions = d.feed(
        b"EHLO again\r\n"
        b"MAIL FROM:<Sender@Example.TEST> SIZE=42 BODY=8bitmime SMTPUTF8 ret=hdrs "
        b"ENVID=AbC+2Bd REQUIRETLS\r\n"
        b"RCPT TO:<Bob@Example.test> NOTIFY=success,Delay ORCPT=rfc822;Bob+2Btag@Example.test\r\n"
        b"RCPT TO:<carol@example.test> NOTIFY=NEVER\r\n"
        b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
    )
    (message,) = delivered(actions)
    assert message.mail_from == "Sender@Example.TEST"
    assert dict(message.mail_params) == {
        "SIZE": "42",
        "BODY": "8bitmime",
        "SMTPUTF8": None,
        "RET": "hdrs",
        "ENVID": "AbC+2Bd",
        "REQUIRETLS": None,
    }
    assert [(r.address, dict(r.params)) for r in message.rcpts] == [
        ("Bob@Example.test", {"NOTIFY": "success,Delay", "ORCPT": "rfc822;Bob+2Btag@Example.test"}),
        ("carol@example.test", {"NOTIFY": "NEVER"}),
    ]
    assert (message.tls, message.ehlo, message.peer, message.esmtp) == (TLS, "again", PEER, True)
    assert message.body == b"Subject: x\r\n\r\nbody\r\n"


def test_source_route_is_dropped_and_quoted_local_part_kept() -> None:
    actions = feed_lines(
        dialogue(),
        ["EHLO c", 'MAIL FROM:<@relay.test:"a b"@x.test>', "RCPT TO:<b@y>", "DATA", ".", ""],
    )
    assert delivered(actions)[0].mail_from == '"a b"@x.test'


# ---- the end-of-data answer waits for the shell ---------------------------------------------


def test_end_of_data_waits_for_the_shell_and_pipelined_commands_wait_too() -> None:
    d = dialogue()
    d.greet()
    actions = d.feed(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n"
        b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"
    )
    assert codes(actions) == [250, 250, 250, 354]
    assert isinstance(actions[-1], Deliver) and d.pending == "deliver"
    with pytest.raises(RuntimeError, match="pending"):
        d.feed(b"NOOP\r\n")
    answered = d.delivered(ACCEPT)
    assert codes(answered) == [250, 250, 250, 354]
    assert answered[0] == Send(("250 2.0.0 Ok: queued",))
    assert d.pending is None


def test_a_refusal_at_end_of_data_keeps_the_session() -> None:
    store_failed = Decision(Reply(451, "4.3.0 Error: queue file write error"))
    actions = feed_lines(dialogue(), [*MAIL, "DATA", "x", ".", "NOOP"], end_of_data=store_failed)
    assert codes(actions) == [220, 250, 250, 250, 354, 451, 250]


def test_delivered_without_a_pending_deliver_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        dialogue().delivered(ACCEPT)
    with pytest.raises(RuntimeError):
        dialogue().authenticated(True)


SESSION = (
    b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nl1\r\n..l2\r\n.\r\n"
    b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 5\r\nab\r\nc"
    b"BDAT 0 LAST\r\nQUIT\r\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 64, 128, 4096])
def test_any_chunking_of_the_input_gives_the_same_session(size: int) -> None:
    d = dialogue(extensions=Extensions(chunking=True))
    actions = d.greet()
    for start in range(0, len(SESSION), size):
        actions += resolve(d, d.feed(SESSION[start : start + size]))
    assert codes(actions) == [220, 250, 250, 250, 354, 250, 250, 250, 250, 250, 221]
    assert [(m.body, m.chunked) for m in delivered(actions)] == [
        (b"l1\r\n.l2\r\n", False),
        (b"ab\r\nc", True),
    ]
    assert isinstance(actions[-1], Close)


# ---- caps ----------------------------------------------------------------------------------


def test_overlong_command_line_is_discarded_as_it_comes_then_refused() -> None:
    d = dialogue(limits=Limits(max_command_line_bytes=64))
    actions = d.greet()
    for _ in range(1000):  # a megabyte without a line end is never held
        actions += d.feed(b"x" * 1024)
    actions += d.feed(b"\r\nNOOP\r\n")
    assert codes(actions) == [220, 500, 250]
    assert Seen("<command line too long>") in actions


def test_overlong_text_line_is_read_to_the_end_then_refused() -> None:
    d = dialogue(limits=Limits(max_text_line_bytes=100))
    actions = feed_lines(d, [*MAIL, "DATA", "x" * 500, ".", "NOOP"])
    assert codes(actions) == [220, 250, 250, 250, 354, 500, 250]
    assert delivered(actions) == []


def test_message_over_the_size_limit_is_refused_after_the_data() -> None:
    d = dialogue(extensions=Extensions(size=50))
    actions = feed_lines(d, [*MAIL, "DATA", *["0123456789"] * 6, ".", "NOOP"])
    assert codes(actions)[-2:] == [552, 250]
    assert delivered(actions) == []


def test_bdat_chunk_over_the_size_limit_is_read_and_discarded() -> None:
    d = dialogue(extensions=Extensions(size=100, chunking=True))
    actions = feed_lines(d, MAIL)
    actions += d.feed(b"BDAT 1000 LAST\r\n" + b"z" * 1000 + b"NOOP\r\n")
    assert codes(actions)[-2:] == [552, 250]
    assert delivered(actions) == []


def test_the_limits_cap_what_size_advertises() -> None:
    d = dialogue(extensions=Extensions(size=None), limits=Limits(max_message_bytes=20))
    actions = feed_lines(d, [*MAIL, "DATA", "a" * 30, "."])
    assert codes(actions)[-1] == 552
    assert not any("SIZE" in line for a in actions if isinstance(a, Send) for line in a.lines)


# ---- STARTTLS --------------------------------------------------------------------------------


def test_plaintext_after_starttls_is_dropped_and_the_session_starts_over() -> None:
    d = dialogue(starttls=True, extensions=Extensions(requiretls=True, auth=("PLAIN",)))
    actions = d.greet() + d.feed(b"EHLO c\r\n")
    ehlo = [a for a in actions if isinstance(a, Send)][1].lines
    assert "250-STARTTLS" in ehlo and not any("REQUIRETLS" in x or "AUTH" in x for x in ehlo)
    actions = d.feed(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    assert codes(actions) == [220] and isinstance(actions[-1], StartTls)
    assert d.feed(b"RCPT TO:<more@x>\r\n") == []  # still before the handshake: dropped
    assert d.discarded_bytes == len(b"MAIL FROM:<injected@x>\r\nRCPT TO:<more@x>\r\n")
    assert d.tls_started(TLS) == []
    actions = d.feed(b"MAIL FROM:<a@x>\r\nEHLO again\r\nSTARTTLS\r\n")
    assert codes(actions) == [503, 250, 554]
    lines = [a for a in actions if isinstance(a, Send)][1].lines
    assert "250-AUTH PLAIN" in lines and any("REQUIRETLS" in x for x in lines)
    assert not any("STARTTLS" in x for x in lines)


# ---- AUTH ------------------------------------------------------------------------------------

PLAIN = b64("\0alice\0s3cret pass")
AUTH_CASES = [  # (label, lines after EHLO, codes after the EHLO reply, identity)
    ("PLAIN initial response", [f"AUTH PLAIN {PLAIN}"], [235], "alice"),
    ("PLAIN after 334", ["AUTH plain", PLAIN], [334, 235], "alice"),
    (
        "PLAIN authzid = authcid",
        [f"AUTH PLAIN {b64('alice' + chr(0) + 'alice' + chr(0) + 's3cret pass')}"],
        [235],
        "alice",
    ),
    (
        "PLAIN acting as another",
        [f"AUTH PLAIN {b64('bob' + chr(0) + 'alice' + chr(0) + 's3cret pass')}"],
        [535],
        None,
    ),
    ("PLAIN wrong secret", [f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'guess')}"], [535], None),
    ("PLAIN unknown user", [f"AUTH PLAIN {b64(chr(0) + 'mallory' + chr(0) + 'x')}"], [535], None),
    ("PLAIN malformed", [f"AUTH PLAIN {b64('alice')}"], [501], None),
    ("LOGIN", ["AUTH LOGIN", b64("alice"), b64("s3cret pass")], [334, 334, 235], "alice"),
    (
        "LOGIN with the username",
        [f"AUTH LOGIN {b64('alice')}", b64("s3cret pass")],
        [334, 235],
        "alice",
    ),
    ("cancelled", ["AUTH LOGIN", "*", "NOOP"], [334, 501, 250], None),
    ("not base64", ["AUTH PLAIN", "!!!", "NOOP"], [334, 501, 250], None),
    ("unknown mechanism", ["AUTH CRAM-MD5"], [504], None),
    ("twice", [f"AUTH PLAIN {PLAIN}", f"AUTH PLAIN {PLAIN}"], [235, 503], "alice"),
    ("inside a transaction", ["MAIL FROM:<a@x>", f"AUTH PLAIN {PLAIN}"], [250, 503], None),
    (
        "MAIL AUTH=<> parameter",
        [f"AUTH PLAIN {PLAIN}", "MAIL FROM:<a@x> AUTH=<>"],
        [235, 250],
        "alice",
    ),
]


@pytest.mark.parametrize(
    ("label", "lines", "expected", "identity"), AUTH_CASES, ids=[c[0] for c in AUTH_CASES]
)
def test_auth(label: str, lines: list[str], expected: list[int], identity: str | None) -> None:
    d = dialogue(extensions=Extensions(auth=("PLAIN", "LOGIN"), auth_in_clear=True))
    actions = feed_lines(d, ["EHLO c", *lines])
    assert codes(actions)[2:] == expected
    assert d.auth == identity


def test_auth_secrets_are_never_in_seen_lines_or_reprs() -> None:
    d = dialogue(extensions=Extensions(auth=("PLAIN", "LOGIN"), auth_in_clear=True))
    actions = d.greet() + d.feed(f"EHLO c\r\nAUTH PLAIN {PLAIN}\r\n".encode())
    assert Seen("AUTH PLAIN ****") in actions
    (auth,) = [a for a in actions if isinstance(a, Authenticate)]
    assert (auth.mechanism, auth.identity, auth.secret) == ("PLAIN", "alice", "s3cret pass")
    assert "s3cret" not in repr(auth) and PLAIN not in repr(actions)
    d = dialogue(extensions=Extensions(auth=("LOGIN",), auth_in_clear=True))
    login = f"EHLO c\r\nAUTH LOGIN\r\n{b64('alice')}\r\n{b64('s3cret pass')}\r\n"
    actions = d.greet() + d.feed(login.encode())
    assert [a.line for a in actions if isinstance(a, Seen)] == ["EHLO c", "AUTH LOGIN"]


def test_failed_auth_counts_toward_the_error_limit() -> None:
    d = dialogue(
        extensions=Extensions(auth=("PLAIN",), auth_in_clear=True), limits=Limits(max_errors=2)
    )
    wrong = f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'guess')}"
    assert codes(feed_lines(d, ["EHLO c", wrong, wrong])) == [220, 250, 535, 421]


def test_tls_forgets_the_authentication_of_the_clear_text_session() -> None:
    d = dialogue(starttls=True, extensions=Extensions(auth=("PLAIN",), auth_in_clear=True))
    feed_lines(d, ["EHLO c", f"AUTH PLAIN {PLAIN}"])
    before = d.auth
    d.feed(b"STARTTLS\r\n")
    d.tls_started(TLS)
    assert (before, d.auth, d.helo) == ("alice", None, None)


def test_the_message_carries_the_authenticated_identity() -> None:
    d = dialogue(starttls=True, extensions=AUTH_EXT)
    d.greet()
    d.feed(b"EHLO c\r\nSTARTTLS\r\n")
    d.tls_started(TLS)
    actions = feed_lines(d, ["EHLO c", f"AUTH PLAIN {PLAIN}", *MAIL[1:], "DATA", "x", "."])
    (message,) = delivered(actions)
    assert (message.auth, message.tls) == ("alice", TLS)


# ---- mailbox syntax --------------------------------------------------------------------------

GOOD_MAILBOXES = [
    "bob@example.org",
    "Bob.Smith+tag@Example.ORG",
    '"john doe"@example.org',
    '"a@b"@example.org',
    '"quote\\"d"@example.org',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "üser@exämple.org",
    "a@localhost",
    "x" * 64 + "@example.org",
]

BAD_MAILBOXES = [  # (address, what the problem names)
    ("bob", "no @domain"),
    ("@example.org", "local part before @ is empty"),
    ("bob@", "domain after @ is empty"),
    ("bob smith@example.org", "neither a dot-atom nor a quoted string"),
    (".bob@example.org", "neither a dot-atom"),
    ("bob..smith@example.org", "neither a dot-atom"),
    ("bob@example..org", "empty label"),
    ("bob@example.org.", "empty label"),
    ("bob@-example.org", "invalid label '-example'"),
    ("bob@exa_mple.org", "invalid label 'exa_mple'"),
    ("bob@[300.1.1.1]", "not an IPv4 or IPv6"),
    ("bob@[192.0.2.1", "not an IPv4 or IPv6"),
    ("a\rb@example.org", "control character"),
    ("a\nb@example.org", "control character"),
    ("x" * 65 + "@example.org", "local part is 65 octets long; at most 64"),
    ("a@" + "b" * 64 + ".org", "longer than 63 octets"),
    ("a@" + ".".join(["b" * 60] * 5), "domain is 304 octets long; at most 255"),
    ("x" * 60 + "@" + ".".join(["b" * 60] * 4), "address is 304 octets long; at most 254"),
]


@pytest.mark.parametrize("address", GOOD_MAILBOXES, ids=[a[:40] for a in GOOD_MAILBOXES])
def test_mailbox_problem_accepts(address: str) -> None:
    assert mailbox_problem(address) is None


@pytest.mark.parametrize(("address", "problem"), BAD_MAILBOXES, ids=[p for _, p in BAD_MAILBOXES])
def test_mailbox_problem_names_the_problem(address: str, problem: str) -> None:
    found = mailbox_problem(address)
    assert found is not None and problem in found
