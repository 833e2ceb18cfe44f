"""One timed run of each engine in bench.throughput: queue the batch, release, clock the sink.

`run_postfix` and `run_delivery` do the same thing with each engine: queue the batch with
delivery held (Postfix: every message on hold; delivery: worker not started), note the sink's
message counter, release (Postfix: ``postsuper -H ALL`` + ``postqueue -f``; delivery: start
the worker), and take the time at which the sink's counter reaches the batch (`RunResult`).
Each then waits until the engine has finished its own bookkeeping (Postfix: queue empty;
delivery: every outcome recorded) and reads the CPU the engine used from release to there.

Outcomes: a `RunResult` for every run, complete or not (a run that did not get the whole
batch accepted within its deadline says how many were); `PostfixError` or `RunnerError` when
an engine could not even be set up.
Limits: CPU is the engine's own: Postfix's whole instance (master and every daemon it ran,
plus the release commands), delivery's whole process; the sink's and the DNS server's are not
included in either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.throughput_kit import batch, postfix, procs, sink

__all__ = [
    "Engine",
    "Mode",
    "RunResult",
    "RunnerError",
    "Setup",
    "drain_timeout_s",
    "postfix_deliveries",
    "run_delivery",
    "run_postfix",
    "tls_sink_sessions",
]

Engine = Literal["postfix", "delivery"]
Mode = Literal["clear", "tls"]

MIN_RATE_MSGS_PER_S = 25
"""A run gets N / this many seconds (at least `MIN_DEADLINE_S`) before it is cut off: far
below either engine, so only a stuck run is cut, and the benchmark always ends."""
MIN_DEADLINE_S = 60.0
STALL_S = 2.0
"""Postfix has given up on what it has not delivered once nothing was in its incoming or
active queue for this long (the rest waits in the deferred queue): the run ends there."""
LATE_COUNT_S = 1.0
"""How long the sink's counter may trail an engine that says it is done."""
CACHED_CLOSE_S = 10.0
"""Longest wait for Postfix's cached connections to close after a run."""
RUNNER_EXIT_S = 30.0
"""How long delivery's runner may take to stop its worker and close its store."""
SETTLE_QUIET_S = 0.3
"""Sessions are counted once the sink's counters stayed unchanged this long after a run."""
SETTLE_MAX_S = 3.0


class RunnerError(RuntimeError):
    """delivery's runner process failed to queue or report; the message quotes its output."""


def drain_timeout_s(count: int, /) -> float:
    """How long one run may take (see `MIN_RATE_MSGS_PER_S`)."""
    return max(MIN_DEADLINE_S, count / MIN_RATE_MSGS_PER_S)


@dataclass(frozen=True)
class Setup:
    """What every run of one mode shares."""

    mode: Mode
    count: int
    counter: sink.SmtpSink
    """The smtp-sink whose message counter is the clock (behind the TLS sink in ``tls``)."""
    sender: postfix.Sender
    tls_sink: postfix.TlsSink | None
    dns: tuple[str, int]
    smtp_host: str
    smtp_port: int
    """Where engines connect: smtp-sink in ``clear``, the TLS sink in ``tls``."""
    ca_file: Path
    workdir: Path


@dataclass(frozen=True)
class RunResult:
    """One engine's run (see the module docstring).

    :param accepted: messages the sink accepted during the run.
    :param seconds: release to the last message accepted; None when not all were accepted
        within the deadline.
    :param done_s: release to the end of the engine's bookkeeping (Postfix: queue empty;
        delivery: every outcome recorded); None if it did not end.
    :param cpu_s: CPU seconds the engine used from release to done.
    :param connections: SMTP connections the engine opened to the sink.
    :param tls: of those, the ones with STARTTLS.
    :param sink_cpu_s: CPU seconds the sink used meanwhile (smtp-sink, and the TLS sink's
        Postfix instance in ``tls``): both engines share the machine with it.
    :param detail: engine-specific figures (delivery: its runner's report).
    """

    engine: Engine
    mode: Mode
    count: int
    accepted: int
    seconds: float | None
    done_s: float | None
    cpu_s: float
    connections: int
    tls: int
    sink_cpu_s: float
    fill_s: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float | None:
        """Messages per second, release to last accepted; None for an incomplete run."""
        return self.count / self.seconds if self.seconds else None


async def _settled_counters(counter: sink.SmtpSink) -> sink.Counters:
    """The sink's counters once sessions stopped ending (see `SETTLE_QUIET_S`)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last = counter.counters
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_QUIET_S)
        if counter.counters == last:
            break
        last = counter.counters
    return last


def _log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def tls_sink_sessions(lines: Iterable[str], /) -> tuple[int, int]:
    """(connections ended, of which with STARTTLS) in the TLS sink's smtpd log lines.

    >>> tls_sink_sessions([
    ...     "Nov 21 04:05:13 sink postfix/smtpd[5795]: connect from localhost[127.0.0.1]",
    ...     "Nov 21 04:05:13 sink postfix/smtpd[5795]: disconnect from localhost[127.0.0.1] "
    ...     "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
    ...     "Nov 21 04:05:14 sink postfix/smtpd[5796]: disconnect from localhost[127.0.0.1] "
    ...     "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    ... ])
    (2, 1)
    """
    ended = [line for line in lines if "smtpd[" in line and " disconnect from " in line]
    return len(ended), sum(" starttls=1 " in f"{line} " for line in ended)


def postfix_deliveries(lines: Iterable[str], /) -> tuple[int, int]:
    """(messages sent, connections opened for them) in a Postfix sender's log lines.

    A delivery over a cached connection says how often that connection was used
    (``conn_use=2``); one without it opened its connection.

    >>> postfix_deliveries([
    ...     "postfix/smtp[1]: A1: to=<r0@d0.bench.test>, relay=127.0.0.5[127.0.0.5]:2599, "
    ...     "delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1)",
    ...     "postfix/smtp[1]: A2: to=<r1@d1.bench.test>, relay=127.0.0.5[127.0.0.5]:2599, "
    ...     "conn_use=2, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
    ...     "postfix/qmgr[2]: A1: removed",
    ... ])
    (2, 1)
    """
    sent = [line for line in lines if " status=sent " in line]
    return len(sent), sum("conn_use=" not in line for line in sent)


async def _clock(
    counter: sink.SmtpSink, messages: int, ended: Awaitable[object], *, timeout_s: float
) -> float | None:
    """When the sink's counter reached ``messages``; None if it did not before the timeout,
    nor within `LATE_COUNT_S` after ``ended`` (the engine says it has nothing left to do)."""
    clock = asyncio.ensure_future(counter.wait_for(messages, timeout_s=timeout_s))
    end = asyncio.ensure_future(ended)
    try:
        await asyncio.wait([clock, end], return_when=asyncio.FIRST_COMPLETED)
        if not clock.done():
            await asyncio.wait([clock], timeout=LATE_COUNT_S)
        if not clock.done():
            clock.cancel()
            return None
        return clock.result()
    finally:
        for task in (clock, end):
            if not task.done():
                task.cancel()
        await asyncio.gather(clock, end, return_exceptions=True)


async def _postfix_gave_up(sender: postfix.Sender) -> None:
    """Return once nothing was in flight in Postfix for `STALL_S` (see there)."""
    quiet_since: float | None = None
    while True:
        await asyncio.sleep(postfix.POLL_S * 5)
        if sender.queued(postfix.IN_FLIGHT_DIRS) == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= STALL_S:
                return
        else:
            quiet_since = None


def _sink_cpu_s(setup: Setup) -> float:
    """CPU seconds used so far by the sink (both processes in ``tls``)."""
    used = procs.tree_cpu_s(setup.counter.pid)
    return used + (setup.tls_sink.cpu_s() if setup.tls_sink is not None else 0.0)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_postfix(setup: Setup) -> RunResult:
    """Queue the batch in the Postfix sender, held; release it; clock the sink."""
    sender, count = setup.sender, setup.count
    envelopes = [
        postfix.Envelope(batch.SENDER, batch.recipient(n), batch.content(n)) for n in range(count)
    ]
    started = time.perf_counter()
    await sender.fill(envelopes, timeout_s=drain_timeout_s(count))
    fill_s = time.perf_counter() - started
    log_offset = _log_offset(sender.maillog)
    sink_log_offset = _log_offset(setup.tls_sink.maillog) if setup.tls_sink else 0
    base, sessions0 = setup.counter.counters.messages, setup.counter.counters.sessions
    setup.counter.expect(base + count)
    cpu0, children0, sink0 = sender.cpu_s(), _children_cpu_s(), _sink_cpu_s(setup)
    released = time.perf_counter()
    await sender.release()
    timeout = drain_timeout_s(count)
    last = await _clock(setup.counter, base + count, _postfix_gave_up(sender), timeout_s=timeout)
    drained = await sender.wait_queued(
        0, postfix.QUEUE_DIRS, timeout_s=timeout if last is not None else 0
    )
    done = time.perf_counter()
    cpu_s = sender.cpu_s() - cpu0 + (_children_cpu_s() - children0)
    sink_cpu_s = _sink_cpu_s(setup) - sink0
    accepted = setup.counter.counters.messages - base
    if not drained:
        await sender.discard_all()
    sent, connections = postfix_deliveries(_log_since(sender.maillog, log_offset))

    def closed() -> int:
        if setup.tls_sink is None:
            return setup.counter.counters.sessions - sessions0
        return tls_sink_sessions(_log_since(setup.tls_sink.maillog, sink_log_offset))[0]

    # Postfix keeps idle connections for reuse a little while (smtp_connection_cache_time_limit,
    # 2 s by default): wait until they are closed, so that the next run starts without them.
    # Polled: the counts come from another process's log and counters, no event to await.
    deadline = time.monotonic() + CACHED_CLOSE_S
    while closed() < connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(SETTLE_QUIET_S)
    tls = 0  # Postfix logs no TLS detail by default (smtp_tls_loglevel = 0): the sink tells
    if setup.tls_sink is not None:
        connections, tls = tls_sink_sessions(_log_since(setup.tls_sink.maillog, sink_log_offset))
    return RunResult(
        engine="postfix",
        mode=setup.mode,
        count=count,
        accepted=accepted,
        seconds=None if last is None else last - released,
        done_s=done - released if drained else None,
        cpu_s=cpu_s,
        connections=connections,
        tls=tls,
        sink_cpu_s=sink_cpu_s,
        fill_s=fill_s,
        detail={"sent_logged": sent},
    )


class _Runner:
    """The delivery runner process (`throughput_kit.delivery_runner`), from the parent side."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process, self.log = process, log

    @classmethod
    async def start(cls, setup: Setup, folder: Path, *, profile: Path | None) -> _Runner:
        await asyncio.to_thread(folder.mkdir, parents=True)
        log = folder / "delivery.log"
        argv = [
            sys.executable,
            "-m",
            "bench.throughput_kit.delivery_runner",
            "--workdir",
            str(folder),
            "--dns",
            f"{setup.dns[0]}:{setup.dns[1]}",
            "--port",
            str(setup.smtp_port),
            "--count",
            str(setup.count),
            "--ca-file",
            str(setup.ca_file),
            "--timeout",
            str(drain_timeout_s(setup.count)),
        ]
        if profile is not None:
            argv += ["--profile", str(profile)]
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=Path(__file__).parent.parent.parent,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        return cls(process, log)

    async def message(self, kind: str, *, timeout_s: float) -> dict[str, Any]:
        """The runner's next protocol line, which must be ``kind``."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.process.stdout.readline()
        except TimeoutError:
            raise RunnerError(
                f"no {kind!r} from the delivery runner in {timeout_s:.0f} s"
            ) from None
        try:
            message = json.loads(line)
            payload: dict[str, Any] = message[kind]
        except (ValueError, KeyError, TypeError):
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise RunnerError(
                f"the delivery runner said {line!r} instead of {kind!r}; its log ends:\n"
                + "\n".join(tail)
            ) from None
        return payload

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def finish(self) -> None:
        """Wait for the runner to exit (end of input ends one still waiting for ``go``); kill
        it if it does not within `RUNNER_EXIT_S`."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(RUNNER_EXIT_S):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def run_delivery(setup: Setup, folder: Path, *, profile: Path | None = None) -> RunResult:
    """Queue the batch in a fresh delivery runner, worker stopped; start it; clock the sink."""
    count = setup.count
    started = time.perf_counter()
    runner = await _Runner.start(setup, folder, profile=profile)
    try:
        ready = await runner.message("ready", timeout_s=drain_timeout_s(count))
        fill_s = time.perf_counter() - started
        sink_log_offset = _log_offset(setup.tls_sink.maillog) if setup.tls_sink else 0
        log_offset = _log_offset(runner.log)
        sessions0 = setup.counter.counters.sessions
        base = setup.counter.counters.messages
        setup.counter.expect(base + count)
        sink0 = _sink_cpu_s(setup)
        released = time.perf_counter()
        runner.go()
        timeout = drain_timeout_s(count)
        done_message = asyncio.ensure_future(runner.message("done", timeout_s=timeout + 30))
        last = await _clock(
            setup.counter, base + count, asyncio.shield(done_message), timeout_s=timeout
        )
        done = await done_message
        sink_cpu_s = _sink_cpu_s(setup) - sink0
    finally:
        await runner.finish()
    counters = await _settled_counters(setup.counter)
    connections, tls = counters.sessions - sessions0, 0
    if setup.tls_sink is not None:
        connections, tls = tls_sink_sessions(_log_since(setup.tls_sink.maillog, sink_log_offset))
    done["log_bytes"] = _log_offset(runner.log) - log_offset
    done["fill_in_runner_s"] = ready["fill_s"]
    return RunResult(
        engine="delivery",
        mode=setup.mode,
        count=count,
        accepted=counters.messages - base,
        seconds=None if last is None else last - released,
        done_s=done["settled_s"] if done["complete"] else None,
        cpu_s=done["cpu_s"],
        connections=connections,
        tls=tls,
        sink_cpu_s=sink_cpu_s,
        fill_s=fill_s,
        detail=done,
    )
