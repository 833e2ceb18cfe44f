"""What an evaluation may know beyond its variables: local domains and DNS answers.

Evaluation is pure and synchronous: ``is_local_domain()`` reads ``Environment.local_domains``
and ``dns_query()`` reads ``Environment.dns_answers``. A DNS answer that is not there yet is
not guessed: evaluation stops with ``NeedsLookup``, the async shell (resolve.py) performs the
lookup and evaluates again with the answer added.

Keys of ``dns_answers`` are ``(name, TYPE)``: the name lowercased as written (no trailing dot
is added or removed), the record type uppercased, e.g. ``("example.org", "MX")``. An answer is
a list of values, usually strings in presentation form; an empty list means no records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from delivery.expr.values import Value

__all__ = ["EMPTY_ENVIRONMENT", "Environment", "NeedsLookup"]


@dataclass(frozen=True, slots=True)
class Environment:
    """Read-only knowledge for one evaluation.

    :param local_domains: the configured local domains (``[local] domains``), lowercase.
    :param dns_answers: ``(name lowercased, TYPE uppercased)`` -> answer list.
    """

    local_domains: frozenset[str] = frozenset()
    dns_answers: Mapping[tuple[str, str], Value] = field(default_factory=dict)


EMPTY_ENVIRONMENT = Environment()
"""No local domains and no DNS answers."""


class NeedsLookup(Exception):
    """``dns_query(name, rtype)`` needs an answer that the Environment does not hold.

    Not a DeliveryError: it is the pure core asking its async shell for data (resolve.py).
    """

    def __init__(self, name: str, rtype: str, /) -> None:
        super().__init__(name, rtype)
        self.name, self.rtype = name, rtype

    def __str__(self) -> str:
        return f"needs the DNS answer of {self.name} {self.rtype}"
