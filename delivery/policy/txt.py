"""Choosing the one versioned TXT record a policy lookup reads (RFC 8461 §3.1, RFC 8460 §3).

MTA-STS (`v=STSv1;`) and TLS-RPT (`v=TLSRPTv1;`) discovery share a rule: records that do not
begin with the version tag are discarded, and more than one record that does means no policy
at all. `select_record` applies it and says, for the operator, why nothing was chosen.

Outcomes:
    the record text, when exactly one record begins with the tag;
    `NoRecord(reason)` otherwise: none (naming a near miss such as a missing ';'), or several.
Security: the records are attacker-influenced DNS data; they are quoted shortened.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["QUOTE_LIMIT_CHARS", "NoRecord", "quote", "select_record"]

QUOTE_LIMIT_CHARS = 80
"""How much of a hostile, possibly huge record a message shows."""


@dataclass(frozen=True, slots=True)
class NoRecord:
    """No record was chosen; ``reason`` says why."""

    reason: str


def quote(text: str, /) -> str:
    """``text`` quoted for a message, shortened: it may be hostile and long.

    >>> quote("v=STSv1 id=1")
    "'v=STSv1 id=1'"
    """
    return repr(text if len(text) <= QUOTE_LIMIT_CHARS else text[:QUOTE_LIMIT_CHARS] + "...")


def select_record(records: Sequence[str], tag: str, /, *, several: str) -> str | NoRecord:
    """select_record - the one record beginning ``<tag>;`` (spaces allowed before the ';').

    :param tag: the version tag, e.g. ``v=STSv1``.
    :param several: what several matching records mean, for the reason (names the RFC rule).

    >>> select_record(["v=spf1 -all", "v=STSv1; id=1;"], "v=STSv1", several="no policy")
    'v=STSv1; id=1;'
    >>> select_record(["v=STSv1 id=1"], "v=STSv1", several="no policy").reason
    "TXT record 'v=STSv1 id=1' does not begin with 'v=STSv1;': discarded"
    """
    pattern = re.compile(re.escape(tag) + r"[ \t]*;")
    candidates = [record for record in records if pattern.match(record)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        return NoRecord(f"{len(candidates)} TXT records begin with '{tag};': {several}")
    near = next((r for r in records if r[: len(tag)].lower() == tag.lower()), None)
    if near is not None:
        return NoRecord(f"TXT record {quote(near)} does not begin with '{tag};': discarded")
    if records:
        return NoRecord(f"none of the {len(records)} TXT records begins with '{tag};'")
    return NoRecord("no TXT record")
