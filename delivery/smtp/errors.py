"""Errors of the outbound SMTP client layer.

Every failure of a session step is an `AttemptError` carrying its DESIGN §4
`kind`, the `phase` it happened in, the server's `reply` when there was one,
and a sentence for the operator that names the host, its IP address and the
step ("mx1.example.com[192.0.2.1] did not answer EHLO within 300s"). Whether
that means "try the next MX", "defer" or "bounce" is decided by the engine,
never here.

Outcomes (the classes, and their `kind`):
    ConnectFailed        CONNECTION  TCP connect refused, unreachable, timed out
    PhaseTimeout         CONNECTION at connect/greeting, IO after: no reply in time
    ConnectionLost       CONNECTION at connect/greeting, IO after: peer closed or reset
    UnexpectedReply      UNEXPECTED_REPLY  a well-formed reply that ends the step
                         (greeting not 220, EHLO and HELO refused, RSET refused,
                         a reply nobody asked for)
    ProtocolViolation    UNEXPECTED_REPLY  bytes that are not an SMTP reply, or
                         exceed a cap (see `delivery.smtp.reply`)
    StartTlsRefused      TLS   STARTTLS answered with anything but 220
    CertificateRejected  TLS   the handshake (STARTTLS, or implicit TLS: phase
                               "tls") failed certificate verification
    HandshakeFailed      TLS   any other handshake failure, EOF or timeout
    AuthNotProtected     TLS   AUTH asked of a session without TLS: credentials
                               are never sent in clear text (nothing was sent)
    AuthUnavailable      UNEXPECTED_REPLY  the server offers no AUTH mechanism
                               we may use (nothing was sent)
    AuthRefused          UNEXPECTED_REPLY  the server refused our credentials
                               (e.g. 535 5.7.8); an `UnexpectedReply`
    ExtensionNotOffered  TLS for REQUIRETLS, else UNEXPECTED_REPLY: the message
                         needs an extension the server did not announce
    InvalidArgument      (a ValueError, not an AttemptError) a value that cannot
                         be put on the wire safely, e.g. an address with CR/LF
    ReplyFormatError     (a ValueError) raised by the pure `ReplyParser`; the
                         session translates it into ProtocolViolation

Standards: RFC 5321 §4.2 (replies), RFC 3207 (STARTTLS), RFC 8314 (implicit TLS),
RFC 4954 (AUTH), RFC 8689 (REQUIRETLS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from delivery import errors

if TYPE_CHECKING:
    from delivery.smtp.reply import Reply

__all__ = [
    "AuthError",
    "AuthNotProtected",
    "AuthRefused",
    "AuthUnavailable",
    "CertificateRejected",
    "ConnectFailed",
    "ConnectionLost",
    "ExtensionNotOffered",
    "HandshakeFailed",
    "InvalidArgument",
    "Phase",
    "PhaseTimeout",
    "ProtocolViolation",
    "ReplyFormatError",
    "SmtpError",
    "StartTlsRefused",
    "TlsError",
    "UnexpectedReply",
]

Phase = Literal[
    "connect",
    "tls",
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "dot",
    "rset",
    "quit",
]
"""The step of a session an error belongs to: "tls" is the handshake of implicit TLS (before
the greeting), "dot" the reply to the end of data."""

_EARLY_PHASES: frozenset[Phase] = frozenset({"connect", "greeting"})


def _transport_kind(phase: Phase) -> errors.LastError:
    """Before the server greeted us the host is unreachable; after, the conversation broke."""
    return errors.LastError.CONNECTION if phase in _EARLY_PHASES else errors.LastError.IO


class SmtpError(errors.AttemptError):
    """One step of an SMTP session failed.

    :param server_name: the host name we meant to reach (MX or relay name).
    :param ip: the address actually connected to.
    :param phase: the step that failed.
    :param message: the operator's sentence; names the host, the IP and the step.
    :param reply: the server's reply that ended the step, if any.
    """

    def __init__(
        self,
        server_name: str,
        ip: str,
        phase: Phase,
        message: str,
        /,
        reply: Reply | None = None,
    ) -> None:
        # One argument up the chain: OSError (under TimeoutError, ConnectionError) would
        # read several as errno, strerror and filename.
        super().__init__(message)
        self.args = (server_name, ip, phase, message)
        self.server_name, self.ip, self.phase, self.message = server_name, ip, phase, message
        self.reply = reply

    def __str__(self) -> str:
        return self.message


class ConnectFailed(SmtpError, ConnectionError):
    """The TCP connection could not be established (refused, unreachable, bad source IP)."""

    kind = errors.LastError.CONNECTION


class PhaseTimeout(SmtpError, TimeoutError):
    """The server did not complete a step within that phase's timeout."""

    def __init__(
        self, server_name: str, ip: str, phase: Phase, message: str, /, reply: Reply | None = None
    ) -> None:
        super().__init__(server_name, ip, phase, message, reply)
        self.kind = _transport_kind(phase)


class ConnectionLost(SmtpError, ConnectionError):
    """The server closed or reset the connection in the middle of a step."""

    def __init__(
        self, server_name: str, ip: str, phase: Phase, message: str, /, reply: Reply | None = None
    ) -> None:
        super().__init__(server_name, ip, phase, message, reply)
        self.kind = _transport_kind(phase)


class UnexpectedReply(SmtpError):
    """A well-formed reply that does not let the step go on; `reply` holds it."""

    kind = errors.LastError.UNEXPECTED_REPLY


class ProtocolViolation(SmtpError):
    """The server sent something that is not a valid SMTP reply, or exceeded a cap."""

    kind = errors.LastError.UNEXPECTED_REPLY


class TlsError(SmtpError):
    """STARTTLS or implicit TLS could not secure the connection; the session is closed
    afterwards (except after StartTlsRefused)."""

    kind = errors.LastError.TLS


class StartTlsRefused(TlsError):
    """STARTTLS was answered with something other than 220; `reply` holds it."""


class CertificateRejected(TlsError):
    """The peer's certificate failed verification (untrusted, expired, wrong name...).

    :param verify_message: OpenSSL's verdict, e.g. ``certificate has expired``.
    :param verify_code: OpenSSL's X509_V_ERR_* number.
    :param phase: "starttls", or "tls" for implicit TLS.
    """

    def __init__(
        self,
        server_name: str,
        ip: str,
        message: str,
        verify_message: str,
        verify_code: int,
        /,
        *,
        phase: Phase = "starttls",
    ) -> None:
        super().__init__(server_name, ip, phase, message)
        self.verify_message, self.verify_code = verify_message, verify_code


class HandshakeFailed(TlsError):
    """The TLS handshake failed for a reason other than the certificate, or timed out."""


class AuthError(SmtpError):
    """AUTH (RFC 4954) did not authenticate us (phase "auth")."""

    kind = errors.LastError.UNEXPECTED_REPLY

    def __init__(self, server_name: str, ip: str, message: str, /) -> None:
        super().__init__(server_name, ip, "auth", message)


class AuthNotProtected(AuthError):
    """AUTH was asked of a session that is not TLS-protected; nothing was sent.

    PLAIN and LOGIN send the secret itself: in clear text anyone on the path reads it.
    """

    kind = errors.LastError.TLS


class AuthUnavailable(AuthError):
    """The server announced no AUTH mechanism we may use; nothing was sent."""


class AuthRefused(UnexpectedReply):
    """The server refused our credentials or the exchange; `reply` holds its reply (with our
    credentials redacted, should it echo them). The session stays usable."""

    def __init__(self, server_name: str, ip: str, message: str, reply: Reply, /) -> None:
        super().__init__(server_name, ip, "auth", message, reply)


class ExtensionNotOffered(SmtpError):
    """The message needs an ESMTP extension the server did not announce.

    Raised before MAIL FROM is sent: REQUIRETLS (RFC 8689 §4.2.1) and SMTPUTF8
    (RFC 6531 §3.4) messages must not be sent to a server lacking them.

    :param extension: the missing keyword, e.g. ``REQUIRETLS``.
    """

    def __init__(self, server_name: str, ip: str, message: str, extension: str, /) -> None:
        super().__init__(server_name, ip, "mail", message)
        self.extension = extension
        self.kind = (
            errors.LastError.TLS if extension == "REQUIRETLS" else errors.LastError.UNEXPECTED_REPLY
        )


class InvalidArgument(errors.DeliveryError, ValueError):
    """A value given to the SMTP client cannot be sent safely (CR/LF, controls, non-ASCII...).

    :param field: what the value is, e.g. ``sender`` or ``recipient``.
    :param reason: a sentence naming the fault.
    """

    def __init__(self, field: str, reason: str, /) -> None:
        super().__init__(field, reason)
        self.field, self.reason = field, reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ReplyFormatError(errors.DeliveryError, ValueError):
    """Bytes from the server are not a valid SMTP reply, or exceed a parser cap.

    :param reason: what is wrong, with a short excerpt of the offending bytes.
    :param replies: the complete replies that came before the fault in the same
        feed; they are still valid (e.g. the 220 to STARTTLS before garbage).
    """

    def __init__(self, reason: str, /, replies: tuple[Reply, ...] = ()) -> None:
        super().__init__(reason)
        self.reason, self.replies = reason, replies

    def __str__(self) -> str:
        return self.reason
