"""Delivery schedule arithmetic: when to retry, when to warn the sender, when to give up.

A `Schedule` holds the values of one `MtaDeliverySchedule` (DESIGN §3) as plain
data; the worker builds it from the registry snapshot, this module never reads the
registry. The functions answer, from the schedule and a recipient's state, the
questions the worker asks after each attempt. All times and durations are epoch
milliseconds / milliseconds. Pure: no I/O, no clock (``now`` is passed in).

Semantics:
    retry    ``retry_ms[n-1]`` is the wait after the n-th failed attempt; the last
             value repeats. With the default (2m, 5m, ...) the second attempt comes
             2 minutes after the first.
    notify   ``notify_ms[k]`` is the queue age at which the (k+1)-th delay DSN goes
             out (default 1d, 3d); no repetition past the list, and none at or
             after a TTL expiry, which sends the failure DSN instead.
    expiry   `Ttl`: the recipient expires ``expire_ms`` after the message arrived;
             the last retry is brought forward to that moment, so the final
             attempt happens at expiry rather than up to one interval after it.
             `Attempts`: it expires when ``max_attempts`` attempts have failed.
    A recipient is checked for expiry after a failed attempt: an expired one
    bounces (see `delivery.engine.outcome.expired`) instead of being rescheduled.

Outcomes: numbers and booleans; `ConfigError` for a schedule that cannot work
(empty retry list, non-positive durations, notify times not increasing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from delivery.errors import ConfigError

__all__ = [
    "Attempts",
    "Expiry",
    "Schedule",
    "Ttl",
    "deadline",
    "expected_expiry",
    "expires_in",
    "is_expired",
    "next_attempt_at",
    "notify_at",
    "retry_delay",
]


@dataclass(frozen=True, slots=True)
class Ttl:
    """Expire a fixed time after arrival.

    :param expire_ms: lifetime in ms from the message's arrival, > 0.
    """

    expire_ms: int

    def __post_init__(self) -> None:
        if self.expire_ms <= 0:
            raise ConfigError("expiry.expire", f"must be positive, not {self.expire_ms} ms")


@dataclass(frozen=True, slots=True)
class Attempts:
    """Expire after a number of failed attempts.

    :param max_attempts: attempts made before giving up, >= 1.
    """

    max_attempts: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("expiry.maxAttempts", f"must be at least 1, not {self.max_attempts}")


Expiry = Ttl | Attempts


@dataclass(frozen=True, slots=True)
class Schedule:
    """One delivery schedule (the values of an `MtaDeliverySchedule`).

    :param name: the schedule's name, as the ``schedule`` expression returns it.
    :param queue: the virtual queue its recipients wait in.
    :param retry_ms: waits between attempts, in ms; non-empty, the last repeats.
    :param notify_ms: queue ages in ms for delay DSNs, increasing; empty for none.
    :param expiry: when to give up.
    :raises ConfigError: a schedule that cannot work.
    """

    name: str
    queue: str
    retry_ms: tuple[int, ...]
    notify_ms: tuple[int, ...]
    expiry: Expiry

    def __post_init__(self) -> None:
        if not self.retry_ms:
            raise ConfigError("retry", "needs at least one interval")
        if any(wait <= 0 for wait in self.retry_ms):
            raise ConfigError("retry", "intervals must be positive")
        if any(age <= 0 for age in self.notify_ms):
            raise ConfigError("notify", "times must be positive")
        if any(b <= a for a, b in zip(self.notify_ms, self.notify_ms[1:], strict=False)):
            raise ConfigError("notify", "times are queue ages and must increase")


def retry_delay(schedule: Schedule, attempts: int, /) -> int:
    """retry_delay - the wait (ms) after the ``attempts``-th failed attempt (>= 1).

    >>> s = Schedule("s", "q", (120_000, 300_000), (), Attempts(5))
    >>> [retry_delay(s, n) for n in (1, 2, 3)]
    [120000, 300000, 300000]
    """
    if attempts < 1:
        raise ValueError(f"attempts counts failed attempts, >= 1, not {attempts}")
    return schedule.retry_ms[min(attempts, len(schedule.retry_ms)) - 1]


def deadline(expiry: Expiry, /, *, received_at: int) -> int | None:
    """deadline - the expiry time of a `Ttl` schedule, ``None`` for `Attempts`."""
    match expiry:
        case Ttl(expire_ms):
            return received_at + expire_ms
        case Attempts():
            return None
        case _:
            assert_never(expiry)


def is_expired(expiry: Expiry, /, *, received_at: int, attempts: int, now: int) -> bool:
    """is_expired - whether a recipient should be given up after a failed attempt.

    :param attempts: attempts made so far, the failed one included.
    """
    match expiry:
        case Ttl(expire_ms):
            return now >= received_at + expire_ms
        case Attempts(max_attempts):
            return attempts >= max_attempts
        case _:
            assert_never(expiry)


def next_attempt_at(schedule: Schedule, /, *, received_at: int, attempts: int, now: int) -> int:
    """next_attempt_at - when to try again after the ``attempts``-th failed attempt.

    ``now`` plus the retry wait, brought forward to a TTL deadline so that the last
    attempt happens at expiry. Call it only for a recipient that has not expired.
    """
    due = now + retry_delay(schedule, attempts)
    limit = deadline(schedule.expiry, received_at=received_at)
    return due if limit is None else max(now, min(due, limit))


def notify_at(schedule: Schedule, /, *, received_at: int, notify_num: int) -> int | None:
    """notify_at - when the next delay DSN is due, ``None`` for no more.

    :param notify_num: delay DSNs already sent.
    """
    if notify_num >= len(schedule.notify_ms):
        return None
    at = received_at + schedule.notify_ms[notify_num]
    limit = deadline(schedule.expiry, received_at=received_at)
    return None if limit is not None and at >= limit else at


def expected_expiry(schedule: Schedule, /, *, received_at: int, attempts: int, now: int) -> int:
    """expected_expiry - when the recipient expires if every attempt from ``now`` fails.

    Exact for `Ttl`. For `Attempts`, an estimate: the next attempt at ``now``, then
    the retry waits until the last allowed attempt. It gives DSNs their
    Will-Retry-Until and expressions their ``expires_in``.

    :param attempts: attempts made so far.
    """
    match schedule.expiry:
        case Ttl(expire_ms):
            return received_at + expire_ms
        case Attempts(max_attempts):
            remaining = range(attempts + 1, max_attempts)
            return now + sum(retry_delay(schedule, n) for n in remaining)
        case _:
            assert_never(schedule.expiry)


def expires_in(schedule: Schedule, /, *, received_at: int, attempts: int, now: int) -> int:
    """expires_in - ms until `expected_expiry`, never negative (the ``expires_in`` variable).

    >>> s = Schedule("s", "q", (60_000,), (), Ttl(3_600_000))
    >>> expires_in(s, received_at=0, attempts=2, now=600_000)
    3000000
    """
    at = expected_expiry(schedule, received_at=received_at, attempts=attempts, now=now)
    return max(0, at - now)
