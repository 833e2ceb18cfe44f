"""Loopback addresses and ports for harness servers, verified by binding.

Each harness MX host listens on its own loopback address, and all of one lab's receivers share
one port (the engine dials every MX on the one ``[smtp] port``). `LoopbackPool` hands out
addresses ``127.<block>.<n>.<m>`` from a block, skipping any it cannot bind, so that test
workers (one block each) and concurrent runs do not collide. `bind_same_port` binds one TCP
port on several addresses at once and hands the bound sockets over, so no other process can
take the port between choosing and listening.

Outcomes: addresses and bound sockets; OSError when nothing bindable is left.

Security: only 127.0.0.0/8 is ever handed out or bound (`require_loopback`): harness traffic
never leaves the machine.

Limits: IPv4 only: IPv6 has a single loopback address (::1), which cannot give each MX host an
address of its own. Linux routes all of 127.0.0.0/8 to the loopback interface; other systems
need the addresses configured first (a bind failure says so).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence

__all__ = [
    "LoopbackPool",
    "bind_same_port",
    "bind_tcp",
    "require_loopback",
]

FIRST_HOST_OCTET = 2  # .0 and .1 of each /24 are left alone (127.0.0.1 is everybody's)
LAST_HOST_OCTET = 254
SAME_PORT_ATTEMPTS = 32  # tries at a port free on every address before giving up


def require_loopback(host: str, *, ipv6: bool = False) -> str:
    """``host`` if it is a loopback address: 127.0.0.0/8, or also ::1 with ``ipv6``.

    :raises ValueError: anything else.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not address.is_loopback or (address.version == 6 and not ipv6):
        where = "127.0.0.0/8 or ::1" if ipv6 else "127.0.0.0/8"
        raise ValueError(f"{host} is not in {where}: harness servers listen on loopback only")
    return host


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not yet listening) to ``host``:``port`` with SO_REUSEADDR.

    SO_REUSEADDR lets a port in TIME_WAIT be reused; Linux still refuses an address:port that
    another socket listens on, which is the conflict that matters.

    :raises OSError: the bind failed.
    """
    require_loopback(host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_same_port(hosts: Sequence[str], *, port: int = 0) -> tuple[int, dict[str, socket.socket]]:
    """Bind one TCP port on every address in ``hosts``.

    :param port: the port to use, 0 for any port free on all of them.
    :returns: the port and the bound sockets by address; the caller owns (and closes) them.
    :raises OSError: ``port`` is taken on some address, or no common free port was found.
    """
    if not hosts:
        return port, {}
    attempts = 1 if port else SAME_PORT_ATTEMPTS
    for _ in range(attempts):
        first = bind_tcp(hosts[0], port)
        chosen = int(first.getsockname()[1])
        bound = {hosts[0]: first}
        try:
            for host in hosts[1:]:
                bound[host] = bind_tcp(host, chosen)
        except OSError:
            for sock in bound.values():
                sock.close()
            if port:
                raise
            continue
        return chosen, bound
    raise OSError(errno.EADDRINUSE, f"no port free on all of {', '.join(hosts)}")


class LoopbackPool:
    """Hands out loopback addresses ``127.<block>.<n>.<m>``, each one checked bindable.

    :param block: the second octet, 0-255; give each test worker its own.
    :param start: the third octet to start from.
    """

    def __init__(self, block: int = 1, *, start: int = 0) -> None:
        if not 0 <= block <= 255 or not 0 <= start <= 255:
            raise ValueError("block and start are octets: 0-255")
        self.block = block
        self._next = (start, FIRST_HOST_OCTET)

    def take(self) -> str:
        """The next address of the block that can be bound (port 0).

        :raises OSError: the block is exhausted.
        """
        host, sock = self.bind(0)
        sock.close()
        return host

    def bind(self, port: int) -> tuple[str, socket.socket]:
        """The next address where ``port`` can be bound, and the socket bound there.

        Addresses where the port is taken (another run of the suite, say) are skipped.

        :raises PermissionError: ``port`` is privileged and we may not bind it.
        :raises OSError: the block is exhausted.
        """
        while True:
            host = self._advance()
            try:
                return host, bind_tcp(host, port)
            except PermissionError:
                raise
            except OSError:
                continue

    def take_many(self, count: int) -> list[str]:
        """``count`` addresses from `take`."""
        return [self.take() for _ in range(count)]

    def _advance(self) -> str:
        third, fourth = self._next
        if third > 255:
            raise OSError(errno.EADDRNOTAVAIL, f"loopback block 127.{self.block}/16 is used up")
        if fourth < LAST_HOST_OCTET:
            self._next = (third, fourth + 1)
        else:
            self._next = (third + 1, FIRST_HOST_OCTET)
        return f"127.{self.block}.{third}.{fourth}"
