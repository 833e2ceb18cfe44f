"""Sign-in sessions of the web admin, and the CSRF tokens that go with them.

A session is made when an API token signs in: a random id (the cookie) maps to the token's
`Principal`, a per-session CSRF token and a few flash messages. The token itself is never
stored, so a stolen session is worth at most SESSION_LIFETIME_MS and dies with the daemon.

Before sign-in there is no session: the sign-in form is protected by a "pre-session" cookie
and a form token that is its HMAC under a key made at start (`SignInGuard`), so that another
site cannot sign a browser in with the attacker's token (login CSRF) and nothing is stored
for visitors who never sign in.

Outcomes:
    SessionStore.find(id, now) -> Session, or None for an unknown, expired or idle session.
    SignInGuard.check(cookie, form_token) -> bool.

Security:
    Ids and CSRF tokens are 256-bit values from `secrets`. Sessions are indexed by the SHA-256
    of their id, so neither the dict's timing nor a memory dump hands out a usable id; CSRF
    tokens are compared in constant time. A session ends after SESSION_IDLE_MS without a
    request, after SESSION_LIFETIME_MS in any case, and at sign-out. Signing in always makes
    a new id (no session fixation). The cookies are set by app.py
    (`set_cookie`): HttpOnly, SameSite=Strict, Path=/admin, Secure over TLS, no Max-Age.

Limits: MAX_SESSIONS, MAX_FLASHES.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, Literal

from delivery.api import auth

__all__ = [
    "COOKIE_PATH",
    "MAX_FLASHES",
    "MAX_SESSIONS",
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "SESSION_IDLE_MS",
    "SESSION_LIFETIME_MS",
    "Flash",
    "Session",
    "SessionStore",
    "SignInGuard",
    "same_secret",
]

SESSION_COOKIE: Final = "delivery_admin"
"""The session cookie."""
PRE_COOKIE: Final = "delivery_admin_signin"
"""The cookie that ties the sign-in form to this browser (login CSRF)."""
COOKIE_PATH: Final = "/admin"
"""Both cookies are sent to the admin pages only, never to /api."""

SESSION_IDLE_MS: Final = 30 * 60_000
"""A session nobody used for 30 minutes ends: an unattended browser does not stay signed in."""
SESSION_LIFETIME_MS: Final = 12 * 3_600_000
"""Every session ends after 12 hours, however busy: a working day, then sign in again."""
MAX_SESSIONS: Final = 1000
"""Sessions held at once; beyond it the least recently used ends. Each is a few hundred bytes,
and only a valid API token can make one."""
MAX_FLASHES: Final = 8
"""Messages waiting for the next page of a session; older ones are dropped."""

_RANDOM_BYTES: Final = 32
"""256 bits for ids, CSRF tokens and the sign-in key."""


def same_secret(given: str | None, expected: str, /) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-line message shown once on the next page: ``ok`` or ``error``."""

    level: Literal["ok", "error"]
    text: str


@dataclass(slots=True)
class Session:
    """One signed-in browser.

    :ivar principal: the token's name and permissions, as the API sees them.
    :ivar csrf: the token every form and script of this session must send back.
    :ivar created_ms: epoch ms of sign-in; :ivar seen_ms: epoch ms of the last request.
    """

    principal: auth.Principal
    csrf: str
    created_ms: int
    seen_ms: int
    flashes: list[Flash] = field(default_factory=list)

    def flash(self, level: Literal["ok", "error"], text: str, /) -> None:
        """Keep ``text`` for the next page (at most MAX_FLASHES are kept)."""
        self.flashes.append(Flash(level, text))
        del self.flashes[:-MAX_FLASHES]

    def take_flashes(self) -> list[Flash]:
        """The waiting messages, removed from the session."""
        taken, self.flashes = self.flashes, []
        return taken


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class SessionStore:
    """The sessions of one daemon, in memory: a restart signs everyone out."""

    def __init__(
        self,
        *,
        idle_ms: int = SESSION_IDLE_MS,
        lifetime_ms: int = SESSION_LIFETIME_MS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._idle_ms, self._lifetime_ms, self._max = idle_ms, lifetime_ms, max_sessions
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, principal: auth.Principal, /, *, now: int) -> tuple[str, Session]:
        """A new session for ``principal``: its id (for the cookie) and the session."""
        session_id = secrets.token_urlsafe(_RANDOM_BYTES)
        session = Session(principal, secrets.token_urlsafe(_RANDOM_BYTES), now, now)
        self._sessions[_key(session_id)] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session_id, session

    def find(self, session_id: str | None, /, *, now: int) -> Session | None:
        """The live session of ``session_id``, marked as used now; None when there is none."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if now - session.seen_ms > self._idle_ms or now - session.created_ms > self._lifetime_ms:
            del self._sessions[key]
            return None
        session.seen_ms = now
        self._sessions.move_to_end(key)
        return session

    def close(self, session_id: str | None, /) -> None:
        """End the session of ``session_id`` (sign-out); unknown ids are ignored."""
        if session_id:
            self._sessions.pop(_key(session_id), None)


class SignInGuard:
    """Login-CSRF protection without server state: form token = HMAC(key, pre-session cookie)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(_RANDOM_BYTES)

    @staticmethod
    def new_cookie() -> str:
        """A fresh pre-session cookie value."""
        return secrets.token_urlsafe(_RANDOM_BYTES)

    def form_token(self, cookie: str, /) -> str:
        """The token the sign-in form carries for this browser's pre-session cookie."""
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def check(self, cookie: str | None, form_token: str | None, /) -> bool:
        """Whether ``form_token`` was issued for ``cookie`` by this daemon."""
        if not cookie:
            return False
        return same_secret(form_token, self.form_token(cookie))
