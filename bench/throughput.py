"""Throughput: delivery against Postfix on the same batch, to the same sink, side by side.

    python -m bench.throughput [--quick] [--count N] [--repeat R] [--modes clear,tls]
                               [--profile clear,tls|none] [--keep]

On loopback only, in one run: N messages (default 5,000, 2 KB, one recipient each, spread
over 10 domains whose MX hosts all point at the sink) are queued in each engine with delivery
held (Postfix: every message on hold; delivery: worker not started), then released; each run
is timed from the release to the moment the sink's counter reaches N. R repetitions (default
3) alternate which engine goes first. Clear text first, to Postfix's `smtp-sink`; then
STARTTLS, to Postfix's smtpd offering STARTTLS with a harness certificate and passing each
transaction to smtp-sink. Both engines verify the sink's certificate against the harness CA
(Postfix: relayhost, ``smtp_tls_security_level = may`` and the CA file; delivery: its default
objects, `optional` STARTTLS, ``[tls] ca_file``). Everything else is each engine's defaults.

Prints, per mode: every run (msgs/s, time to the last message, time until the engine's
bookkeeping is done, CPU seconds, connections), then per engine min / median / max msgs/s and
median CPU seconds, and the ratio delivery / postfix of the median rates. Then, unless
``--profile none``, one extra delivery run per profiled mode under cProfile, summarized:
where the event loop's time goes, calls per message, the costliest functions.

Needs: Linux, root (a private Postfix instance runs its master as root), and Debian's
`postfix` package (`postfix`, `postsuper`, `postqueue`, `sendmail`, `smtp-sink`). The
benchmark installs nothing: without them it says how to install them and that nothing was
measured, and exits 0 with ``--quick`` (so the test suite passes on machines without them).
``--quick``: 200 messages, one repetition, the clear-text mode profiled: well under a minute.
It never fails on a figure: a run that does not finish within its deadline is reported with
the number of messages that were accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import pstats
import random
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from bench.throughput_kit import batch, engines, postfix, profile_report, sink
from delivery.harness import certs, dns_server, loopback

COUNT = 5_000
QUICK_COUNT = 200
REPEAT = 3
MODES: tuple[engines.Mode, ...] = ("clear", "tls")
LOOPBACK_BLOCKS = range(200, 255)
"""Second octets of the loopback addresses the benchmark binds (127.200-254.x.y): away from
the test suite's blocks (127.9-127.x), so a benchmark beside the tests never meets them."""

INSTALL = """\
    apt-get update
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
  (No configuration: the package sets up no system mailer; the benchmark runs private
  instances of its own under a temporary folder, and nothing listens on port 25.)"""

MODE_TITLES = {
    "clear": "clear text: both engines deliver to smtp-sink",
    "tls": "STARTTLS: both engines deliver to Postfix smtpd (STARTTLS, harness certificate), "
    "which passes each transaction to smtp-sink",
}


def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def prerequisites() -> list[str]:
    """What keeps the benchmark from measuring on this machine (empty: nothing)."""
    problems = []
    if not Path("/proc/self/stat").exists():
        problems.append("this is not Linux (CPU times are read from /proc)")
    if os.geteuid() != 0:
        problems.append("not running as root (a private Postfix instance needs root)")
    if missing := postfix.missing_programs():
        problems.append(f"Postfix programs not found: {', '.join(missing)}")
    return problems


def _rate(result: engines.RunResult) -> str:
    rate = result.msgs_per_s
    return f"{rate:8.0f}" if rate is not None else "       -"


def _seconds(value: float | None) -> str:
    return f"{value:8.2f}" if value is not None else "       -"


def run_line(rep: int, result: engines.RunResult) -> str:
    """One run, as a row of the per-mode table."""
    per_msg_ms = result.cpu_s / result.count * 1000
    row = (
        f"  {rep:>3} {result.engine:<9}{_rate(result)} {_seconds(result.seconds)} "
        f"{_seconds(result.done_s)} {result.cpu_s:8.2f} {per_msg_ms:8.3f} "
        f"{result.connections:>7} {result.tls:>7} {result.sink_cpu_s:8.2f}"
    )
    if result.seconds is None:
        row += f"   INCOMPLETE: {result.accepted} of {result.count} accepted"
    return row


RUN_HEADER = (
    f"  {'run':>3} {'engine':<9}{'msgs/s':>8} {'last 250':>8} {'done':>8} "
    f"{'CPU s':>8} {'CPU ms/m':>8} {'conns':>7} {'TLS':>7} {'sink CPU':>8}"
)
RUN_LEGEND = (
    "  last 250: seconds from release to the sink's last accepted message (msgs/s is N over it)",
    "  done: until the engine's bookkeeping ended (Postfix: queue empty; delivery: every outcome "
    "recorded)",
    "  CPU: the engine's CPU seconds from release to done (Postfix: master and every daemon it "
    "ran); conns: SMTP connections it opened, TLS: of which with STARTTLS; sink CPU: the "
    "sink's CPU seconds meanwhile (it shares the machine with the engine)",
)


def delivery_detail(result: engines.RunResult) -> Iterable[str]:
    """What delivery's runner reported beyond the table: threads, store, DNS, log, outcomes."""
    detail, n = result.detail, max(1, result.count)
    threads = detail.get("threads", [])
    main = sum(t["cpu_s"] for t in threads if t["main"])
    others = sum(t["cpu_s"] for t in threads if not t["main"])
    yield (
        f"      delivery CPU ({detail.get('loop', 'asyncio')} event loop): "
        f"event-loop thread {main:.2f} s ({main / n * 1000:.3f} ms/msg), "
        f"other threads (SQLite store, executor) {others:.2f} s ({others / n * 1000:.3f} ms/msg)"
    )
    calls, wall = detail.get("store_calls", {}), detail.get("store_wall_s", {})
    parts = [
        f"{name} {calls[name] / n:.2f}/msg, {wall[name] / calls[name] * 1000:.2f} ms each"
        for name in sorted(calls)
        if calls[name]
    ]
    yield f"      store calls (wall time incl. waiting for the store): {'; '.join(parts)}"
    if lock := detail.get("store_lock"):
        run_s = detail.get("settled_s") or 1.0
        holds = max(1, lock["holds"])
        yield (
            f"      store lock (one transaction at a time): held {lock['held_s']:.2f} s of "
            f"{run_s:.2f} s ({lock['held_s'] / run_s:.0%}), {lock['holds'] / n:.2f} "
            f"transactions/msg, {lock['held_s'] / holds * 1000:.2f} ms each"
        )
    dns = detail.get("dns_cache", {})
    yield (
        f"      DNS: {detail.get('dns_queries', '?')} queries reached the DNS server; "
        f"resolver cache {dns.get('hits', '?')} hits, {dns.get('misses', '?')} misses; "
        f"log: {detail.get('log_bytes', 0) / n:.0f} bytes/msg"
    )
    statuses = {k: v for k, v in detail.get("statuses", {}).items() if v}
    yield f"      recipients by final status: {statuses}"
    for reason in detail.get("reasons", []):
        yield f"      not delivered, e.g.: {reason}"


def summary_lines(results: Sequence[engines.RunResult]) -> Iterable[str]:
    """min / median / max msgs/s and median CPU per engine, and the ratio of the medians."""
    yield f"  {'engine':<9}{'min':>9} {'median':>9} {'max':>9}   msgs/s    {'median CPU s':>12}"
    medians: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for engine in ("postfix", "delivery"):
        mine = [r for r in results if r.engine == engine]
        rates = [r.msgs_per_s for r in mine if r.msgs_per_s is not None]
        if not mine:
            continue
        cpu[engine] = statistics.median(r.cpu_s for r in mine)
        if rates:
            medians[engine] = statistics.median(rates)
            yield (
                f"  {engine:<9}{min(rates):9.0f} {medians[engine]:9.0f} {max(rates):9.0f}"
                f"             {cpu[engine]:12.2f}"
            )
        else:
            yield f"  {engine:<9}  no complete run          {cpu[engine]:12.2f}"
    if "postfix" in medians and "delivery" in medians:
        cpu_ratio = cpu["delivery"] / cpu["postfix"] if cpu.get("postfix") else float("nan")
        yield (
            f"  ratio delivery / postfix: {medians['delivery'] / medians['postfix']:.2f} "
            f"(median msgs/s); CPU per batch: {cpu_ratio:.2f}x Postfix's"
        )
    else:
        yield "  ratio delivery / postfix: n/a (an engine had no complete run)"


class Bench:
    """The world one benchmark runs in: folder, certificates, addresses, DNS (see the module
    docstring); `mode` sets up one mode's sinks and Postfix sender."""

    def __init__(self, folder: Path, count: int, compatibility_level: str) -> None:
        self.folder, self.count, self.compatibility_level = folder, count, compatibility_level
        self.pool = loopback.LoopbackPool(
            random.choice(LOOPBACK_BLOCKS), start=random.randrange(200)
        )
        factory = certs.CertFactory()
        credential = factory.credential([batch.mx_host(domain) for domain in batch.DOMAINS])
        self.cert_files = credential.write(folder / "certs", "sink")
        self.ca_file = factory.write_ca(folder / "certs" / "ca.pem")
        self.dns = dns_server.DnsServer([], host=self.pool.take())

    def _free(self) -> tuple[str, int]:
        host, bound = self.pool.bind(0)
        port: int = bound.getsockname()[1]
        bound.close()
        return host, port

    def zones(self, address: str) -> list[dns_server.ZoneSpec]:
        """The ten domains, each with its own MX host, every one at ``address``."""
        return [
            dns_server.ZoneSpec(
                origin=domain,
                records=(
                    dns_server.RecordSpec("@", "MX", f"10 {batch.mx_host(domain)}."),
                    dns_server.RecordSpec(f"{batch.mx_host(domain)}.", "A", address),
                ),
            )
            for domain in batch.DOMAINS
        ]

    async def mode(self, mode: engines.Mode, stack: AsyncExitStack) -> engines.Setup:
        """Start the sinks and the Postfix sender of ``mode``; they stop with ``stack``."""
        root = self.folder / mode
        counter = sink.SmtpSink(*self._free())
        await stack.enter_async_context(counter)
        facing, tls_sink = (counter.host, counter.port), None
        if mode == "tls":
            facing = self._free()
            tls_sink = postfix.TlsSink(root / "tls-sink")
            tls_sink.configure(
                listen=facing,
                sink=(counter.host, counter.port),
                key_file=self.cert_files.key,
                chain_file=self.cert_files.fullchain,
                compatibility_level=self.compatibility_level,
            )
            await tls_sink.start()
            stack.push_async_callback(tls_sink.stop)
        sender = postfix.Sender(root / "postfix")
        sender.configure(
            sink=facing, ca_file=self.ca_file, compatibility_level=self.compatibility_level
        )
        await sender.start()
        stack.push_async_callback(sender.stop)
        self.dns.set_zones(self.zones(facing[0]))
        return engines.Setup(
            mode=mode,
            count=self.count,
            counter=counter,
            sender=sender,
            tls_sink=tls_sink,
            dns=self.dns.address,
            smtp_host=facing[0],
            smtp_port=facing[1],
            ca_file=self.ca_file,
            workdir=root,
        )

    async def run_delivery(
        self, setup: engines.Setup, name: str, *, profile: Path | None = None
    ) -> engines.RunResult:
        """One delivery run in a fresh folder, with the DNS queries it caused."""
        queries = len(self.dns.queries)
        result = await engines.run_delivery(setup, setup.workdir / name, profile=profile)
        result.detail["dns_queries"] = len(self.dns.queries) - queries
        return result


async def measure(args: argparse.Namespace, folder: Path) -> None:
    """Every mode: the timed repetitions, the table, the summary, the profile."""
    version = await postfix.mail_version()
    compatibility_level = ".".join(version.split(".")[:2])
    bench = Bench(folder, args.count, compatibility_level)
    _say(
        f"Postfix {version} (installed package, default settings, relayhost = the sink) vs "
        f"delivery (default objects; worker as `delivery serve` builds it), Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}",
        f"batch: {args.count} messages of {batch.MESSAGE_BYTES} bytes, one recipient each, "
        f"{batch.DOMAIN_COUNT} domains; {args.repeat} repetition(s), engines alternating; "
        f"work folder {folder}",
    )
    async with bench.dns:
        for mode in args.modes:
            async with AsyncExitStack() as stack:
                setup = await bench.mode(mode, stack)
                _say(
                    "",
                    f"{MODE_TITLES[mode]} (engines connect to {setup.smtp_host}:{setup.smtp_port})",
                    RUN_HEADER,
                )
                results: list[engines.RunResult] = []
                for rep in range(1, args.repeat + 1):
                    order: tuple[engines.Engine, ...] = (
                        ("postfix", "delivery") if rep % 2 else ("delivery", "postfix")
                    )
                    for engine in order:
                        if engine == "postfix":
                            result = await engines.run_postfix(setup)
                        else:
                            result = await bench.run_delivery(setup, f"delivery-{rep}")
                        results.append(result)
                        _say(run_line(rep, result))
                        if engine == "delivery":
                            _say(*delivery_detail(result))
                _say(*RUN_LEGEND, "", *summary_lines(results))
                if mode in args.profile:
                    await profile(bench, setup)


async def profile(bench: Bench, setup: engines.Setup) -> None:
    """One more delivery run, under cProfile, and where its time went."""
    stats_file = setup.workdir / "delivery.pstats"
    result = await bench.run_delivery(setup, "delivery-profiled", profile=stats_file)
    _say(
        "",
        f"  profile of one delivery run ({setup.mode}; under cProfile, so slower: "
        f"{(result.msgs_per_s or 0):.0f} msgs/s, not comparable to the figures above)",
        *delivery_detail(result),
    )
    if not stats_file.exists():
        _say("  (no profile was written)")
        return
    summary = profile_report.summarize(pstats.Stats(str(stats_file)), setup.count)
    loop = str(result.detail.get("loop", "asyncio"))
    _say(*profile_report.format_summary(summary, indent="  ", loop=loop))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT} messages, once")
    parser.add_argument("--count", type=int, help=f"messages per run (default {COUNT})")
    parser.add_argument("--repeat", type=int, help=f"repetitions (default {REPEAT})")
    parser.add_argument("--modes", default=",".join(MODES), help="clear,tls (default both)")
    parser.add_argument(
        "--profile",
        help="modes to profile a delivery run in, or none (default: both; --quick: clear)",
    )
    parser.add_argument("--workdir", help="folder to make the work folder in (default: TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args(argv)
    args.count = args.count or (QUICK_COUNT if args.quick else COUNT)
    args.repeat = args.repeat or (1 if args.quick else REPEAT)
    args.modes = [m for m in args.modes.split(",") if m]
    profile = args.profile or ("clear" if args.quick else ",".join(MODES))
    args.profile = [] if profile == "none" else [m for m in profile.split(",") if m]
    for mode in [*args.modes, *args.profile]:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    _say(f"$ python -m bench.throughput {shlex.join(sys.argv[1:] if argv is None else argv)}")
    if problems := prerequisites():
        _say(
            "NOTHING WAS MEASURED (0 runs): " + "; ".join(problems) + ".",
            "Install Debian's postfix package (it ships smtp-sink), as root:",
            INSTALL,
        )
        sys.exit(0 if args.quick else 1)
    folder = Path(tempfile.mkdtemp(prefix="delivery-bench-", dir=args.workdir))
    folder.chmod(0o755)  # Postfix's daemons, as the postfix user, work below it
    try:
        asyncio.run(measure(args, folder))
    except (postfix.PostfixError, engines.RunnerError) as exc:
        _say(f"the benchmark could not run: {exc}")
        sys.exit(1)
    finally:
        if args.keep:
            _say(f"work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
