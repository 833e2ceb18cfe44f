"""Constants and the client helper shared by the SMTP client tests."""

from __future__ import annotations

from typing import Any

from delivery.smtp.session import SmtpSession, Timeouts

MX_NAME = "mx1.example.test"
MX_IP = "127.0.0.2"
SOURCE_IP = "127.0.0.5"

TIMEOUTS = Timeouts(connect=5000, greeting=5000, ehlo=5000, mail_from=5000, rcpt_to=5000, data=5000)
"""Generous for tests that expect no timeout; a timeout test shortens its own phase."""


async def connect(
    address: tuple[str, int], timeouts: Timeouts = TIMEOUTS, **options: Any
) -> SmtpSession:
    """Open a client session to a test server."""
    return await SmtpSession.connect(
        address[0], address[1], server_name=MX_NAME, timeouts=timeouts, **options
    )
