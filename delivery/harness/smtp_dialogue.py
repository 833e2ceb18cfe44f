"""The SMTP receiver dialogue of the harness: the protocol core under a scripted policy.

`Dialogue` is `delivery.smtp.server.ServerDialogue` (the sans-I/O SMTP server core our
submission listener runs too) with a `ScriptPolicy`: every stage's answer comes from the
receiver's `smtp_script.Script`, the end-of-data reply included, so the whole session is
decided synchronously. Fed the bytes a client sends, it returns, in order, the actions
`smtp_server` performs: record a command line (`Seen`), send a reply after an optional delay
(`Send`), record an accepted message (`Accept`), start the TLS handshake (`StartTls`) or break
it (`BreakTls`), close the connection (`Close`).

Outcomes:
    A message is recorded (`Accept`) only when the reply at end of data is 2xx, so that a test
    that sees it in ``received`` knows the client was told it was accepted. Protocol errors get
    the core's replies (Postfix's texts with RFC 3463 codes; see `delivery.smtp.server`).

Security:
    As the core: every buffer capped, bytes pipelined after STARTTLS discarded before the
    handshake (their count is kept in ``discarded_bytes``), control characters in addresses
    refused. Test equipment: addresses are otherwise not checked beyond the path syntax.

Standards: those of `delivery.smtp.server`.
Limits: no AUTH (the harness offers none). REQUIRETLS is advertised only inside TLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, assert_never

from delivery.harness.smtp_script import (
    DEFAULT_EXTENSIONS,
    DEFAULT_LIMITS,
    DEFAULT_SCRIPT,
    Extensions,
    Limits,
    Script,
    Step,
)
from delivery.smtp import server
from delivery.smtp.server import (
    Close,
    ReceivedMessage,
    Recipient,
    Seen,
    Send,
    StartTls,
    TlsInfo,
    parse_params,
    parse_path,
)

__all__ = [
    "BANNER",
    "Accept",
    "Action",
    "BreakTls",
    "Close",
    "Dialogue",
    "ReceivedMessage",
    "Recipient",
    "ScriptPolicy",
    "Seen",
    "Send",
    "StartTls",
    "TlsInfo",
    "TlsOffer",
    "parse_params",
    "parse_path",
]

TlsOffer = Literal["none", "handshake", "broken"]
"""What STARTTLS leads to: not offered; a real handshake; 220 and then a broken handshake."""

BANNER = "ESMTP delivery harness"
"""The greeting text after the MX name."""


@dataclass(frozen=True, slots=True)
class Accept:
    """A message was accepted; record it before sending the reply that follows."""

    message: ReceivedMessage


@dataclass(frozen=True, slots=True)
class BreakTls:
    """Answer the client's handshake with bytes that are not TLS, then close."""


Action = Seen | Send | Accept | StartTls | BreakTls | Close


def _decision(step: Step) -> server.Decision:
    return server.Decision(step.reply, step.delay, step.close)


class ScriptPolicy(server.Policy):
    """The core's decisions from a `Script`: each stage's `Step`, unchanged."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def greeting(self, session: server.ServerDialogue, /) -> server.Decision:
        return _decision(self.script.greeting)

    def ehlo(self, session: server.ServerDialogue, name: str, /) -> server.Decision:
        return _decision(self.script.ehlo)

    def starttls(self, session: server.ServerDialogue, /) -> server.Decision:
        return _decision(self.script.starttls)

    def mail(
        self, session: server.ServerDialogue, sender: str, params: Mapping[str, str | None], /
    ) -> server.Decision:
        return _decision(self.script.mail)

    def rcpt(
        self, session: server.ServerDialogue, address: str, params: Mapping[str, str | None], /
    ) -> server.Decision:
        return _decision(self.script.rcpt_step(address))

    def data(self, session: server.ServerDialogue, /) -> server.Decision:
        return _decision(self.script.data)

    def quit(self, session: server.ServerDialogue, /) -> server.Decision:
        return _decision(self.script.quit)


class Dialogue:
    """One scripted SMTP session's protocol state. Not thread-safe; one per connection."""

    def __init__(
        self,
        *,
        hostname: str,
        peer: tuple[str, int],
        script: Script = DEFAULT_SCRIPT,
        extensions: Extensions = DEFAULT_EXTENSIONS,
        limits: Limits = DEFAULT_LIMITS,
        tls: TlsOffer = "none",
    ) -> None:
        self.script = script
        self.tls_offer: TlsOffer = tls
        self._broken = False  # STARTTLS answered in mode "broken": the session is over
        self._core = server.ServerDialogue(
            hostname=hostname,
            peer=peer,
            policy=ScriptPolicy(script),
            extensions=extensions,
            limits=limits,
            starttls=tls != "none",
            banner=BANNER,
        )

    # ---- the core's state, as the shell and tests read it --------------------------------

    @property
    def hostname(self) -> str:
        """The MX name: greeting and EHLO reply."""
        return self._core.hostname

    @property
    def peer(self) -> tuple[str, int]:
        """The client's address and port."""
        return self._core.peer

    @property
    def extensions(self) -> Extensions:
        """The ESMTP keywords advertised."""
        return self._core.extensions

    @property
    def limits(self) -> Limits:
        """The caps."""
        return self._core.limits

    @property
    def tls(self) -> TlsInfo | None:
        """The TLS session, once the handshake succeeded."""
        return self._core.tls

    @property
    def helo(self) -> str | None:
        """The EHLO/HELO name in force."""
        return self._core.helo

    @property
    def esmtp(self) -> bool:
        """True after EHLO, False after HELO."""
        return self._core.esmtp

    @property
    def closed(self) -> bool:
        """The session is over: no more actions will come."""
        return self._core.closed or self._broken

    @property
    def awaiting_tls(self) -> bool:
        """STARTTLS was accepted and the handshake has not completed."""
        return self._core.awaiting_tls and not self._broken

    @property
    def discarded_bytes(self) -> int:
        """Plaintext pipelined after STARTTLS, dropped unread."""
        return self._core.discarded_bytes

    # ---- entry points ---------------------------------------------------------------------

    def greet(self) -> list[Action]:
        """The actions at connection time: the greeting, or the scripted one."""
        return self._resolve(self._core.greet())

    def feed(self, data: bytes, /) -> list[Action]:
        """Process client bytes; returns the actions they lead to, in order."""
        if self.closed:
            return []
        return self._resolve(self._core.feed(data))

    def tls_started(self, info: TlsInfo, /) -> list[Action]:
        """The handshake succeeded: RFC 3207 §4.2, forget everything learnt in clear text."""
        return self._resolve(self._core.tls_started(info))

    def _resolve(self, actions: list[server.Action]) -> list[Action]:
        """The core's actions with its pending steps answered from the script, in order."""
        resolved: list[Action] = []
        todo = list(actions)
        while todo:
            action = todo.pop(0)
            match action:
                case server.Deliver(message):
                    step = self.script.end_of_data
                    accepted = step.reply is None or step.reply.code < 300
                    if accepted and not (step.close and step.reply is None):
                        resolved.append(Accept(message))
                    todo.extend(self._core.delivered(_decision(step)))
                case server.Authenticate():
                    todo.extend(self._core.authenticated(False))  # never offered: no AUTH
                case StartTls() if self.tls_offer == "broken":
                    self._broken = True
                    resolved.append(BreakTls())
                    return resolved
                case Seen() | Send() | StartTls() | Close():
                    resolved.append(action)
                case _:
                    assert_never(action)
        return resolved
