"""Harness MTA-STS policy server: HTTPS on loopback serving scripted policies per domain.

One `PolicyServer` plays ``https://mta-sts.<domain>/`` for any number of domains at once: the
TLS certificate is picked by SNI, the policy by the Host header. For each domain a `Policy`
says what ``GET /.well-known/mta-sts.txt`` answers: the status, the Content-Type, the body
(`format_policy` writes a correct one), a Location header (a redirect, which RFC 8461 §3.3
forbids a sender to follow), a delay before answering, a body padded past any size, and the
kind of certificate presented (`certs.CertKind`). Policies can be replaced while it runs
(`set_policy`), the way a domain owner changes theirs.

Outcomes: every request is recorded (`requests`, `request_count`); a path other than the
well-known one, or a Host with no policy, gets 404.

Security: test equipment; bind loopback addresses only. Private keys of the certificates
presented are harness keys (see `certs`).

Standards: RFC 8461 §3.2 (policy format, CRLF lines), §3.3 (HTTPS fetch), RFC 6066 §3 (SNI).
Limits: HTTP/1.1 only, GET and HEAD only; no client certificates.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from aiohttp import web

from delivery.harness import certs, loopback

__all__ = [
    "POLICY_PATH",
    "Policy",
    "PolicyRequest",
    "PolicyServer",
    "StsMode",
    "format_policy",
    "format_txt",
]

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
StsMode = Literal["enforce", "testing", "none"]
PADDING_LINE = "x-padding: " + "x" * 60 + "\r\n"  # an extension field senders must ignore
# A certificate for a name no scenario uses: what a client without SNI is shown.
NO_SNI_NAME = "mta-sts.harness.invalid"


def format_policy(mode: StsMode, mx: Sequence[str], max_age: int, *, version: str = "STSv1") -> str:
    """A policy body in RFC 8461 §3.2 form, CRLF line endings.

    >>> format_policy("enforce", ["mx1.example.test"], 86400)
    'version: STSv1\\r\\nmode: enforce\\r\\nmx: mx1.example.test\\r\\nmax_age: 86400\\r\\n'
    """
    lines = [f"version: {version}", f"mode: {mode}", *(f"mx: {m}" for m in mx)]
    lines.append(f"max_age: {max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def format_txt(policy_id: str) -> str:
    """The ``_mta-sts.<domain>`` TXT record text (RFC 8461 §3.1).

    >>> format_txt("20240101T000000")
    'v=STSv1; id=20240101T000000;'
    """
    return f"v=STSv1; id={policy_id};"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the server answers for one domain.

    ``body`` is served as is (`format_policy` makes a valid one); ``pad_to`` pads it with
    ignorable extension lines to at least that many bytes; ``location`` adds a Location
    header (pair it with a 3xx ``status`` for a redirect); ``delay`` is seconds before the
    response starts; ``cert`` is the kind of certificate shown for ``mta-sts.<domain>``.
    """

    body: str
    status: int = 200
    content_type: str = "text/plain"
    location: str | None = None
    delay: float = 0.0
    pad_to: int | None = None
    cert: certs.CertKind = "valid"

    def payload(self) -> bytes:
        """The response body bytes, padded when asked."""
        body = self.body.encode()
        if self.pad_to is not None and len(body) < self.pad_to:
            line = PADDING_LINE.encode()
            body += line * ((self.pad_to - len(body)) // len(line) + 1)
        return body


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request the server answered."""

    host: str  # the Host header, port and trailing dot removed, lowercase
    sni: str | None  # the TLS server name the client sent
    method: str
    path: str
    status: int  # what we answered


class PolicyServer:
    """HTTPS MTA-STS policy host for many domains; async context manager (also start/stop).

    :param policies: domain (``example.test``) -> `Policy`.
    :param factory: makes the certificate for each ``mta-sts.<domain>``.
    :param host: the address to listen on; :param port: its port, 0 for a free one.
    :param sock: an already bound socket to serve on (``host``/``port`` ignored).
    """

    def __init__(
        self,
        policies: Mapping[str, Policy],
        *,
        factory: certs.CertFactory,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        self.factory = factory
        self.requests: list[PolicyRequest] = []
        self._policies: dict[str, Policy] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        # The server side of ssl does not keep the client's SNI: remember it per connection.
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        self._host, self._port, self._sock = host, port, sock
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self._base = factory.credential(NO_SNI_NAME).make_server_context()
        self._base.sni_callback = self._pick_certificate
        for domain, policy in policies.items():
            self.set_policy(domain, policy)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only after start."""
        if self._address is None:
            raise RuntimeError("the policy server is not started")
        return self._address

    @property
    def policies(self) -> Mapping[str, Policy]:
        """The policies served now, by domain."""
        return dict(self._policies)

    def set_policy(self, domain: str, policy: Policy) -> None:
        """Serve ``policy`` for ``domain`` from now on (new connections see a new cert kind)."""
        domain = _domain(domain)
        self._policies[domain] = policy
        name = f"mta-sts.{domain}"
        self._contexts[name] = self.factory.credential(name, policy.cert).server_context()

    def remove_policy(self, domain: str) -> None:
        """Stop serving ``domain`` (its requests get 404)."""
        self._policies.pop(_domain(domain), None)

    def request_count(self, domain: str) -> int:
        """How many requests came for ``mta-sts.<domain>``."""
        host = f"mta-sts.{_domain(domain)}"
        return sum(1 for request in self.requests if request.host == host)

    def _pick_certificate(
        self, sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        name = (server_name or "").lower().rstrip(".")
        if server_name is not None:
            self._sni[sslobj] = name
        chosen = self._contexts.get(name)
        if chosen is not None:
            sslobj.context = chosen

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].lower().rstrip(".")
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        sni = self._sni.get(ssl_object) if isinstance(ssl_object, ssl.SSLObject) else None
        policy = (
            self._policies.get(host.removeprefix("mta-sts."))
            if host.startswith("mta-sts.")
            else None
        )
        if request.path != POLICY_PATH or policy is None:
            self.requests.append(PolicyRequest(host, sni, request.method, request.path, 404))
            return web.Response(status=404, text="no MTA-STS policy here\n")
        self.requests.append(PolicyRequest(host, sni, request.method, request.path, policy.status))
        if policy.delay:
            await asyncio.sleep(policy.delay)
        headers = {"Content-Type": policy.content_type}
        if policy.location is not None:
            headers["Location"] = policy.location
        return web.Response(status=policy.status, body=policy.payload(), headers=headers)

    async def start(self) -> None:
        """Start serving.

        :raises ValueError: the address is not a loopback address.
        """
        bound_host = self._sock.getsockname()[0] if self._sock is not None else self._host
        loopback.require_loopback(str(bound_host), ipv6=True)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(self._runner, self._sock, ssl_context=self._base)
        else:
            site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._base)
        await site.start()
        bound = self._runner.addresses[0]
        self._address = (str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PolicyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _domain(domain: str) -> str:
    return domain.lower().rstrip(".")
