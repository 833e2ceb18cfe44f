"""Schedule arithmetic as tables: retry waits, delay DSN times, expiry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from delivery.engine import schedule
from delivery.engine.schedule import Attempts, Schedule, Ttl
from delivery.errors import ConfigError

S, M, H, D = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_700_000_000_000

# The `remote` schedule created at first start (DESIGN §3).
REMOTE = Schedule(
    "remote",
    "remote",
    (2 * M, 5 * M, 10 * M, 15 * M, 30 * M, 1 * H, 2 * H, 24 * H, 3 * D),
    (1 * D, 3 * D),
    Ttl(3 * D),
)
FIVE_TRIES = Schedule("five", "remote", (1 * M, 10 * M), (1 * H,), Attempts(5))
LONG_TTL = Schedule("long", "remote", (1 * M,), (1 * D, 3 * D), Ttl(5 * D))


@pytest.mark.parametrize(
    ("sched", "attempts", "delay"),
    [
        (REMOTE, 1, 2 * M),
        (REMOTE, 2, 5 * M),
        (REMOTE, 9, 3 * D),
        (REMOTE, 10, 3 * D),  # the last interval repeats
        (REMOTE, 100, 3 * D),
        (FIVE_TRIES, 1, 1 * M),
        (FIVE_TRIES, 4, 10 * M),
    ],
)
def test_retry_delay(sched: Schedule, attempts: int, delay: int) -> None:
    assert schedule.retry_delay(sched, attempts) == delay


def test_retry_delay_counts_failed_attempts_from_one() -> None:
    with pytest.raises(ValueError):
        schedule.retry_delay(REMOTE, 0)


@pytest.mark.parametrize(
    ("label", "sched", "attempts", "now", "due"),
    [
        ("first failure waits 2m", REMOTE, 1, T0, T0 + 2 * M),
        ("third failure waits 10m", REMOTE, 3, T0 + H, T0 + H + 10 * M),
        ("wait capped at the TTL deadline", REMOTE, 9, T0 + 2 * D, T0 + 3 * D),
        ("deadline passed: due at once", REMOTE, 9, T0 + 4 * D, T0 + 4 * D),
        ("attempt limit: no cap", FIVE_TRIES, 2, T0 + 30 * D, T0 + 30 * D + 10 * M),
    ],
)
def test_next_attempt_at(label: str, sched: Schedule, attempts: int, now: int, due: int) -> None:
    assert schedule.next_attempt_at(sched, received_at=T0, attempts=attempts, now=now) == due


@pytest.mark.parametrize(
    ("label", "sched", "notify_num", "at"),
    [
        ("first delay DSN after a day", REMOTE, 0, T0 + 1 * D),
        ("second at 3d is the expiry: none", REMOTE, 1, None),
        ("past the list: none", REMOTE, 2, None),
        ("attempt limit: no deadline", FIVE_TRIES, 0, T0 + 1 * H),
        ("attempt limit, list done", FIVE_TRIES, 1, None),
        ("no notify times", Schedule("n", "q", (M,), (), Ttl(D)), 0, None),
        ("second inside a longer TTL", LONG_TTL, 1, T0 + 3 * D),
    ],
)  # fmt: skip
def test_notify_at(label: str, sched: Schedule, notify_num: int, at: int | None) -> None:
    assert schedule.notify_at(sched, received_at=T0, notify_num=notify_num) == at


@pytest.mark.parametrize(
    ("label", "expiry", "attempts", "now", "expired"),
    [
        ("TTL not reached", Ttl(3 * D), 50, T0 + 3 * D - 1, False),
        ("TTL reached", Ttl(3 * D), 1, T0 + 3 * D, True),
        ("attempts left", Attempts(5), 4, T0 + 100 * D, False),
        ("attempts used up", Attempts(5), 5, T0, True),
        ("a single attempt", Attempts(1), 1, T0, True),
    ],
)
def test_is_expired(
    label: str, expiry: schedule.Expiry, attempts: int, now: int, expired: bool
) -> None:
    assert schedule.is_expired(expiry, received_at=T0, attempts=attempts, now=now) is expired


@pytest.mark.parametrize(
    ("label", "sched", "attempts", "now", "expiry", "left"),
    [
        ("TTL: fixed deadline", REMOTE, 3, T0 + 1 * D, T0 + 3 * D, 2 * D),
        ("TTL: past the deadline", REMOTE, 3, T0 + 4 * D, T0 + 3 * D, 0),
        # 5 attempts, 2 made: attempt 3 now, 4 after 10m, 5 after 10m more.
        ("attempts: sum of waits", FIVE_TRIES, 2, T0, T0 + 20 * M, 20 * M),
        ("attempts: the last one is next", FIVE_TRIES, 4, T0, T0, 0),
        ("attempts: used up", FIVE_TRIES, 5, T0, T0, 0),
        ("attempts: none made yet", FIVE_TRIES, 0, T0, T0 + 1 * M + 3 * 10 * M, 31 * M),
    ],
)  # fmt: skip
def test_expected_expiry_and_expires_in(
    label: str, sched: Schedule, attempts: int, now: int, expiry: int, left: int
) -> None:
    args = {"received_at": T0, "attempts": attempts, "now": now}
    assert schedule.expected_expiry(sched, **args) == expiry
    assert schedule.expires_in(sched, **args) == left


def test_deadline_exists_for_ttl_only() -> None:
    assert schedule.deadline(Ttl(D), received_at=T0) == T0 + D
    assert schedule.deadline(Attempts(3), received_at=T0) is None


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Schedule("s", "q", (), (), Ttl(D)), "retry"),
        (lambda: Schedule("s", "q", (M, 0), (), Ttl(D)), "retry"),
        (lambda: Schedule("s", "q", (M,), (0,), Ttl(D)), "notify"),
        (lambda: Schedule("s", "q", (M,), (3 * D, D), Ttl(5 * D)), "notify"),
        (lambda: Ttl(0), "expiry.expire"),
        (lambda: Attempts(0), "expiry.maxAttempts"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    assert caught.value.field == field
