"""The event loop the daemon runs on: uvloop when it is installed, else asyncio's own.

`run(main)` is `asyncio.run` with a faster loop when one is available; `loop_name()` says
which one `run` uses (for the start-up log and /healthz).

Why: the worker is one process whose event loop carries every SMTP session, DNS query and
store hand-off; uvloop (libuv, in C) runs the same program with a fraction of the loop's own
overhead. It is optional: nothing in delivery depends on it, and every behaviour is the
same on asyncio's loop (the test suite runs there).

Outcomes: what ``main`` returns or raises.
Limits: uvloop is looked up once per process; ``DELIVERY_EVENT_LOOP=asyncio`` turns it off
(to rule it out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["DISABLE_ENV", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

DISABLE_ENV = "DELIVERY_EVENT_LOOP"
"""Set to ``asyncio`` to run on asyncio's own loop even when uvloop is installed."""


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
    """run - `asyncio.run` on uvloop when it is installed (see the module docstring)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
