"""The event loop the daemon runs on: uvloop when it is installed, else asyncio's own.

`run(main)` is `asyncio.run` with a faster loop when one is available, in a process whose
threads hand over the interpreter lock within `SWITCH_INTERVAL_S`; `loop_name()` says which
loop `run` uses (for the start-up log and /healthz).

Why: the worker is one process whose event loop carries every SMTP session, DNS query and
store hand-off; uvloop (libuv, in C) runs the same program with a fraction of the loop's own
overhead. It is optional: nothing in delivery depends on it, and every behaviour is the
same on asyncio's loop (the test suite runs there). The SQLite stores run each statement on a
thread of their own and hold their transaction lock across the hand-offs; with the default
5 ms switch interval, every hand-off to that thread could wait 5 ms for the interpreter lock
while the loop is busy, and the store lock, not the CPU, bounded the throughput.

Outcomes: what ``main`` returns or raises.
Limits: uvloop is looked up once per process; ``DELIVERY_EVENT_LOOP=asyncio`` turns it off
(to rule it out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["DISABLE_ENV", "SWITCH_INTERVAL_S", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

DISABLE_ENV = "DELIVERY_EVENT_LOOP"
"""Set to ``asyncio`` to run on asyncio's own loop even when uvloop is installed."""

SWITCH_INTERVAL_S = 0.0005
"""`sys.setswitchinterval` of the daemon: how long a busy thread may keep the interpreter lock
from one that waits (Python's default is 5 ms). The store thread's statements are short and
every transaction makes several hand-offs; 0.5 ms lets them through while costing the loop
thread only a lock hand-over when the store thread actually has work (measured with
bench.throughput: 5 ms gave 850-1200 msgs/s, 0.5 ms 1300-1500, 0.25 ms no better)."""


@functools.cache
def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when uvloop is installed and not turned off, else None."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop `run` uses."""
    return "uvloop" if loop_factory() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T], /) -> T:
    """run - `asyncio.run` on uvloop when it is installed (see the module docstring).

    Sets the process's switch interval to `SWITCH_INTERVAL_S` for the run, and back after.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main)
    finally:
        sys.setswitchinterval(previous)
