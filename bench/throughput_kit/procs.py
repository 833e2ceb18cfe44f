"""CPU seconds of a process tree, and running commands, for bench.throughput (Linux /proc).

`tree_cpu_s(pid)` is the CPU (user + system) a process and all its descendants have used so
far: each live process's own time, plus the time of the children each has already reaped
(``cutime``/``cstime``). The difference of two readings is what the tree used in between,
including processes that started and exited meanwhile (Postfix's smtp processes exit after
``max_use`` deliveries; their parent, master, reaps them). A process that exits without
being reaped by anyone in the tree is lost from the sum; Postfix's master reaps its children.

Outcomes: seconds as floats; a process that vanishes while being read is skipped.
Limits: Linux only (`/proc/<pid>/stat`); clock-tick resolution (usually 10 ms).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CommandFailed", "ThreadCpu", "run", "thread_cpu", "tree_cpu_s"]

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


class CommandFailed(RuntimeError):
    """A command the benchmark runs exited with a failure; the message quotes its output."""


@dataclass(frozen=True, slots=True)
class _Stat:
    ppid: int
    self_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: children this process has waited for


def _read_stat(path: Path) -> tuple[str, _Stat] | None:
    try:
        text = path.read_text()
    except OSError:  # gone meanwhile
        return None
    # The command name is in parentheses and may hold spaces or ')': split after the last ')'.
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state; ppid is field 4, utime..cstime are 14..17.
    ticks = [int(value) for value in fields[11:15]]
    stat = _Stat(
        int(fields[1]),
        (ticks[0] + ticks[1]) / CLOCK_TICKS_PER_S,
        (ticks[2] + ticks[3]) / CLOCK_TICKS_PER_S,
    )
    return name, stat


def tree_cpu_s(root: int, /) -> float:
    """CPU seconds used so far by process ``root`` and its descendants (see the docstring)."""
    stats: dict[int, _Stat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            found = _read_stat(entry / "stat")
            if found is not None:
                stats[int(entry.name)] = found[1]
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if (found_stat := stats.get(pid)) is not None:
            total += found_stat.self_s + found_stat.reaped_s
            todo.extend(children.get(pid, ()))
    return total


@dataclass(frozen=True, slots=True)
class ThreadCpu:
    """CPU seconds of one thread of this process."""

    tid: int
    name: str
    cpu_s: float


def thread_cpu() -> list[ThreadCpu]:
    """CPU seconds so far of every thread of this process (the main thread's tid is the pid)."""
    threads = []
    for entry in (PROC / "self" / "task").iterdir():
        found = _read_stat(entry / "stat")
        if found is not None:
            name, stat = found
            threads.append(ThreadCpu(int(entry.name), name, stat.self_s))
    return threads


async def run(*argv: str | Path, stdin: bytes | None = None) -> str:
    """Run a command to its end; its standard output.

    :raises CommandFailed: it exited non-zero (the message quotes what it printed).
    """
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate(stdin)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        command = " ".join(map(str, argv))
        raise CommandFailed(f"{command} exited with status {process.returncode}: {text.strip()}")
    return text
