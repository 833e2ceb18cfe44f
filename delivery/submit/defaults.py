"""The submission listener's defaults and caps, each with its reason (one home, STYLE §9).

The settings the lead wires (`[submission] max_message_size`, `max_recipients`, ...) take
their defaults from here; `SubmissionListener` uses them when not told otherwise.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_AUTH_FAILURE_DELAY_S",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_RECIPIENTS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_STOP_GRACE_S",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT_S",
    "MAX_ORCPT_CHARS",
    "MAX_REPLY_TEXT_CHARS",
]

DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
"""SIZE advertised and enforced: 50 MiB holds a large attachment base64-encoded, and bounds
the memory one session can hold (the message is kept whole until it is queued)."""

DEFAULT_MAX_RECIPIENTS = 1000
"""Recipients per message; more get 452 and go in the client's next transaction (RFC 5321
§4.5.3.1.10). RFC 5321 §4.5.3.1.8 asks for at least 100."""

DEFAULT_MAX_SESSIONS = 100
"""Concurrent client sessions; more are answered 421 at connect. Each holds up to one
message in memory, so this times `DEFAULT_MAX_MESSAGE_BYTES` bounds the listener's memory."""

DEFAULT_IDLE_TIMEOUT_S = 300.0
"""One read of a command or of message data (RFC 5321 §4.5.3.2.7: 5 minutes), also one write
of a reply to a client that does not read. Then 421 and close."""

DEFAULT_TLS_HANDSHAKE_TIMEOUT_S = 30.0
"""One STARTTLS handshake: bounds a client that stalls in the middle of it."""

DEFAULT_MAX_ERRORS = 10
"""Protocol errors (bad commands, bad addresses, failed AUTH) before 421 and close: a client
that keeps failing is a broken or hostile one (Postfix's smtpd_hard_error_limit is 20)."""

DEFAULT_AUTH_FAILURE_DELAY_S = 1.0
"""Wait before answering a failed AUTH: slows down guessing secrets over one connection."""

DEFAULT_STOP_GRACE_S = 10.0
"""On stop, how long a session that is queuing a message may take to finish that step (so
its client hears the 250) before it is cut off (the client then retries: at worst a
duplicate, never a loss)."""

MAX_ORCPT_CHARS = 500
"""RFC 3461 §4.2: an ORCPT value is at most 500 characters."""

MAX_REPLY_TEXT_CHARS = 400
"""Longest reply text we build around client data (an address quoted in a refusal): RFC 5321
§4.5.3.1.5 caps a reply line at 512 octets."""
