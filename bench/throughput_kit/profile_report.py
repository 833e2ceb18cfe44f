"""Where delivery's time goes: a summary of the cProfile stats of one delivery run.

`summarize(stats, messages)` groups the main thread's profiled time by what the code does
(`CATEGORIES`, first match wins, by source file or built-in name), separates the time the
event loop spent waiting in epoll (idle), counts per message a few calls that stand for
costly steps (`COUNTED`), and lists the functions with the most time of their own.

Outcomes: a `Summary` of plain values, rendered by `format_summary`.
Limits: cProfile measures wall time on the main thread only (the event loop); its overhead
inflates code that makes many small calls. Shares are of the main thread's busy (non-idle)
time; the SQLite store's own thread is reported separately by the runner.
"""

from __future__ import annotations

import pstats
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CATEGORIES", "COUNTED", "IN_LOOP", "Summary", "format_summary", "summarize"]

_Key = tuple[str, int, str]  # (file, line, function) as pstats keys its entries
_Match = Callable[[str, str], bool]


def _file(*parts: str) -> _Match:
    return lambda file, name: any(part in file for part in parts)


def _builtin(*parts: str) -> _Match:
    return lambda file, name: file == "~" and any(part in name for part in parts)


IDLE = _builtin("'poll' of 'select.epoll'", "select.epoll.poll")
"""The event loop waiting for I/O: idle time, not work."""

CATEGORIES: tuple[tuple[str, _Match], ...] = (
    ("TLS: handshakes and record crypto", _builtin("_ssl.", "'_ssl")),
    ("TLS: Python side (ssl.py, asyncio sslproto)", _file("/ssl.py", "sslproto.py")),
    (
        "sockets: open, close, send, receive",
        lambda f, n: _builtin("_socket.", "'_socket")(f, n) or f.endswith("/socket.py"),
    ),
    ("SMTP client (delivery.smtp)", _file("/delivery/smtp/")),
    ("DNS (delivery.dns, dnspython)", _file("/delivery/dns/", "/dns/")),
    ("expressions (delivery.expr)", _file("/delivery/expr/")),
    ("queue store, loop side (delivery.queue, aiosqlite)", _file("/delivery/queue/", "aiosqlite")),
    (
        "engine (worker, attempt, planner, outcome, policy)",
        _file("/delivery/engine/", "/delivery/policy/"),
    ),
    (
        "registry snapshot, settings",
        _file("/delivery/registry/", "/delivery/config.py", "pydantic"),
    ),
    ("logging", _file("/logging/")),
    ("asyncio event loop, tasks, streams", _file("/asyncio/", "/selectors.py")),
    (
        "threads, futures (handing work to the store thread)",
        _file("/threading.py", "/concurrent/", "/queue.py"),
    ),
    (
        "dataclasses, enum, re, other stdlib",
        _file("/dataclasses.py", "/enum.py", "/re/", "/copy.py"),
    ),
)
"""Groups of the profile, in matching order: the first that matches a function takes it."""

IN_LOOP = frozenset(
    {
        "TCP connects",
        "socket sends",
        "socket receives",
        "tasks created",
        "event-loop iterations",
        "callbacks run by the loop",
    }
)
"""`COUNTED` rows that asyncio's own loop does in Python: uvloop does them in C, where cProfile
does not see them, so under uvloop they are not counted (`format_summary` says so)."""

COUNTED: tuple[tuple[str, _Match], ...] = (
    ("TCP connects", _builtin("'connect' of '_socket.socket'", "'connect_ex' of '_socket.socket'")),
    (
        "TLS client objects (one per handshake)",
        lambda f, n: f.endswith("ssl.py") and n == "wrap_bio",
    ),
    ("socket sends", _builtin("'send' of '_socket.socket'", "'sendmsg' of '_socket.socket'")),
    ("socket receives", _builtin("'recv' of '_socket.socket'", "'recv_into' of '_socket.socket'")),
    ("log records", lambda f, n: f.endswith("logging/__init__.py") and n == "makeRecord"),
    (
        "expression evaluations",
        lambda f, n: "delivery/expr/" in f and n == "evaluate_resolving",
    ),
    ("tasks created", lambda f, n: f.endswith("asyncio/base_events.py") and n == "create_task"),
    (
        "event-loop iterations",
        lambda f, n: f.endswith("asyncio/base_events.py") and n == "_run_once",
    ),
    ("callbacks run by the loop", lambda f, n: f.endswith("asyncio/events.py") and n == "_run"),
)
"""Calls that stand for costly steps, counted per message."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The profile of one delivery run (see the module docstring).

    :param wall_s: profiled wall time of the main thread; ``idle_s`` of it waiting in epoll.
    :param categories: (group, seconds of own time), largest first; "other" last.
    :param counts: (what, calls) for `COUNTED`.
    :param top: (function, calls, own seconds, cumulative seconds), most own time first.
    """

    messages: int
    wall_s: float
    idle_s: float
    categories: list[tuple[str, float]]
    counts: list[tuple[str, int]]
    top: list[tuple[str, int, float, float]]

    @property
    def busy_s(self) -> float:
        """Main-thread time not spent waiting for I/O."""
        return self.wall_s - self.idle_s


def _label(key: _Key) -> str:
    file, line, name = key
    if file == "~":
        return name
    short = file.split("/site-packages/")[-1].split("/lib/python3")[-1].lstrip("/")
    if "/delivery/" in file:
        short = "delivery/" + file.split("/delivery/")[-1]
    return f"{short}:{line} {name}"


def _group(key: _Key) -> str | None:
    file, _, name = key
    return next((label for label, match in CATEGORIES if match(file, name)), None)


def _anonymous(key: _Key) -> bool:
    """A built-in (or generated) function: its time belongs to whoever called it."""
    return key[0] == "~" or key[0].startswith("<")


def summarize(stats: pstats.Stats, messages: int, *, top: int = 15) -> Summary:
    """Group and count the profile of a run that delivered ``messages`` (see the docstring).

    The own time of a built-in that no group claims (len, isinstance, re.sub, a queue's
    put...) is shared among its callers' groups, in proportion to the time each call site
    spent in it.
    """
    entries: dict[_Key, tuple[int, int, float, float, dict[_Key, tuple[Any, ...]]]]
    entries = stats.stats  # type: ignore[attr-defined]
    totals = dict.fromkeys([name for name, _ in CATEGORIES] + ["other"], 0.0)
    counts = dict.fromkeys([name for name, _ in COUNTED], 0)
    idle = wall = 0.0
    own: list[tuple[str, int, float, float]] = []
    for key, (_, calls, tottime, cumtime, callers) in entries.items():
        file, _, name = key
        wall += tottime
        if IDLE(file, name):
            idle += tottime
            continue
        group = _group(key)
        if group is None and _anonymous(key) and callers:
            spent = sum(edge[2] for edge in callers.values())
            for caller, edge in callers.items():
                share = edge[2] / spent if spent else 1 / len(callers)
                totals[_group(caller) or "other"] += tottime * share
        else:
            totals[group or "other"] += tottime
        for label, match in COUNTED:
            if match(file, name):
                counts[label] += calls
        own.append((_label(key), calls, tottime, cumtime))
    own.sort(key=lambda row: row[2], reverse=True)
    ranked = sorted(((k, v) for k, v in totals.items() if k != "other"), key=lambda kv: -kv[1])
    return Summary(
        messages=messages,
        wall_s=wall,
        idle_s=idle,
        categories=[*ranked, ("other", totals["other"])],
        counts=list(counts.items()),
        top=own[:top],
    )


def format_summary(summary: Summary, *, indent: str = "  ", loop: str = "asyncio") -> Iterable[str]:
    """The summary as report lines; ``loop`` is the event loop the run used (`IN_LOOP`)."""
    n, busy = max(1, summary.messages), summary.busy_s or 1.0
    yield (
        f"{indent}main thread (event loop) under cProfile: {summary.wall_s:.2f} s, of which "
        f"{summary.idle_s:.2f} s idle in epoll and {summary.busy_s:.2f} s busy "
        f"({summary.busy_s / n * 1000:.3f} ms per message)"
    )
    yield f"{indent}busy time by group:"
    for label, seconds in summary.categories:
        if seconds >= 0.0005:
            yield (
                f"{indent}  {seconds / busy:6.1%}  {seconds:7.2f} s  "
                f"{seconds / n * 1000:7.3f} ms/msg  {label}"
            )
    yield f"{indent}calls per message:"
    for label, calls in summary.counts:
        if loop != "asyncio" and label in IN_LOOP:
            yield f"{indent}  {'n/a':>8}  {label} (in {loop}'s C code: not seen by cProfile)"
        else:
            yield f"{indent}  {calls / n:8.2f}  {label}"
    yield f"{indent}functions with the most time of their own:"
    yield f"{indent}  {'own s':>7} {'cum s':>7} {'calls':>9}  function"
    for label, calls, tottime, cumtime in summary.top:
        yield f"{indent}  {tottime:7.2f} {cumtime:7.2f} {calls:9d}  {label}"
