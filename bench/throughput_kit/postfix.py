"""Private Postfix instances for bench.throughput: the reference sender, and the STARTTLS sink.

Each instance lives under its own folder (``etc/`` config, ``spool/`` queue, ``data/``,
``maillog``), made from the templates in ``bench/postfix/`` (``@NAME@`` placeholders), and is
driven with Postfix's own commands given ``-c <folder>/etc``: ``postfix start|stop``,
``sendmail -bs`` to queue, ``postsuper -H ALL`` and ``postqueue -f`` to release. Nothing is
installed, no system instance is touched, and no listener is opened on port 25.

Sender (`Sender`): no listener at all. Mail is queued with ``sendmail -bs`` (SMTP on standard
input, as root) and a header check puts every message on hold as it is queued; `release`
takes them off hold and flushes the queue, and Postfix delivers them to its relayhost, the
sink, with its default settings (20 connections per destination, connection reuse on demand,
opportunistic TLS).

STARTTLS sink (`TlsSink`): smtpd on a loopback address with the harness certificate, relaying
every transaction as it happens to smtp-sink (``smtpd_proxy_filter``).

Outcomes: `PostfixError` (with the end of the instance's maillog) when a command fails or the
instance does not come up; figures as values.
Security: loopback only (``inet_interfaces = loopback-only``; the only listener is the sink's
smtpd on the loopback address it is given). Needs root, as any Postfix instance does.
Limits: Linux (/proc for CPU); Postfix >= 3.4 (``maillog_file``, ``smtpd_tls_chain_files``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.throughput_kit import procs

__all__ = [
    "FILL_STREAMS",
    "IN_FLIGHT_DIRS",
    "POLL_S",
    "QUEUE_DIRS",
    "TEMPLATES",
    "Envelope",
    "PostfixError",
    "PostfixInstance",
    "Sender",
    "TlsSink",
    "mail_version",
    "missing_programs",
]

TEMPLATES = Path(__file__).parent.parent / "postfix"
"""bench/postfix/: the main.cf and master.cf templates."""

PROGRAMS = ("postfix", "postconf", "postsuper", "postqueue", "sendmail", "smtp-sink")
"""What the benchmark runs (Debian's `postfix` package ships them all)."""

FILL_STREAMS = 4
"""``sendmail -bs`` processes queueing at once: each message costs Postfix two fsyncs
(maildrop, then the queue file), so a few streams keep the disk busy while filling."""

QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold")
"""Queue folders a message can be in before it is delivered (counted for "drained")."""

IN_FLIGHT_DIRS = ("maildrop", "incoming", "active")
"""Queue folders of messages Postfix has not given up on for now (not "deferred")."""

POLL_S = 0.02
"""How often the queue folders are counted while waiting for Postfix to fill or drain."""


_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


class PostfixError(RuntimeError):
    """A Postfix instance failed to start, queue or release; the message quotes its log."""


def missing_programs() -> list[str]:
    """The programs the benchmark needs that are not on PATH (also searched: /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/lib/postfix/sbin"])
    return [name for name in PROGRAMS if shutil.which(name, path=path) is None]


async def mail_version() -> str:
    """The installed Postfix's version, e.g. "3.7.11"."""
    out = await procs.run("postconf", "-d", "-h", "mail_version")
    return out.strip()


def _render(template: str, values: Mapping[str, str]) -> str:
    """The template with every ``@NAME@`` replaced; ValueError if one is left unfilled."""
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    if leftover := _PLACEHOLDER.findall(text):
        raise ValueError(f"{template}: placeholders left unfilled: {sorted(set(leftover))}")
    return text


@dataclass
class PostfixInstance:
    """One private Postfix instance under ``root`` (see the module docstring)."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "spool"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def write_config(self, main: str, master: str, values: Mapping[str, str]) -> None:
        """Make the instance's folders and write main.cf and master.cf from the templates."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # Postfix's daemons, once they are the postfix user, read below
        for folder in (self.config_dir, self.queue_dir, self.root / "data"):
            folder.mkdir(exist_ok=True)
        shutil.chown(self.root / "data", user="postfix")
        values = {"ROOT": str(self.root), **values}
        (self.config_dir / "main.cf").write_text(_render(main, values))
        (self.config_dir / "master.cf").write_text(_render(master, values))

    def log_tail(self, lines: int = 15) -> str:
        """The end of the instance's maillog (for error messages)."""
        try:
            text = self.maillog.read_text(errors="replace")
        except OSError:
            return "(no maillog)"
        return "\n".join(text.splitlines()[-lines:])

    async def command(self, *argv: str, stdin: bytes | None = None) -> str:
        """Run a Postfix command on this instance; PostfixError with the log if it fails."""
        try:
            return await procs.run(*argv, stdin=stdin)
        except procs.CommandFailed as exc:
            raise PostfixError(f"{exc}\n{self.maillog}:\n{self.log_tail()}") from exc

    async def start(self) -> None:
        """Start the instance (``postfix -c DIR start``) and wait for its master."""
        await self.command("postfix", "-c", str(self.config_dir), "start")
        deadline = time.monotonic() + 10
        while self.master_pid() is None:
            if time.monotonic() > deadline:
                raise PostfixError(f"no master process for {self.root}:\n{self.log_tail()}")
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        """Stop the instance, if it runs."""
        if self.master_pid() is not None:
            await self.command("postfix", "-c", str(self.config_dir), "stop")

    def master_pid(self) -> int | None:
        """The master's pid while it runs."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return None
        return None if state in ("Z", "X") else pid  # a zombie is an exited master

    def cpu_s(self) -> float:
        """CPU seconds used so far by the instance: master and every process it ran."""
        pid = self.master_pid()
        return procs.tree_cpu_s(pid) if pid is not None else 0.0

    def queued(self, folders: Iterable[str] = QUEUE_DIRS) -> int:
        """Messages in the given queue folders now (hashed subfolders included)."""
        total = 0
        for folder in folders:
            for _, _, files in os.walk(self.queue_dir / folder):
                total += len(files)
        return total

    async def wait_queued(self, count: int, folders: Iterable[str], *, timeout_s: float) -> bool:
        """Wait until ``folders`` hold exactly ``count`` messages; False on timeout."""
        folders = tuple(folders)
        deadline = time.monotonic() + timeout_s
        while self.queued(folders) != count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to queue: sender, one recipient, content (CRLF lines)."""

    sender: str
    recipient: str
    content: bytes


class Sender(PostfixInstance):
    """The reference: Postfix delivering the batch to its relayhost, the sink."""

    def configure(self, *, sink: tuple[str, int], ca_file: Path, compatibility_level: str) -> None:
        """Write the instance's configuration: relayhost ``sink``, the harness CA trusted."""
        host, port = sink
        self.write_config(
            "sender-main.cf",
            "sender-master.cf",
            {
                "COMPATIBILITY_LEVEL": compatibility_level,
                "SINK_HOST": host,
                "SINK_PORT": str(port),
                "CA_FILE": str(ca_file),
            },
        )
        shutil.copy(TEMPLATES / "hold", self.config_dir / "hold")

    async def fill(self, envelopes: list[Envelope], *, timeout_s: float) -> None:
        """Queue ``envelopes`` and wait until every one is on hold.

        :raises PostfixError: a ``sendmail -bs`` stream failed, or they were not all on hold
            within ``timeout_s``.
        """
        held_before = self.queued(("hold",))
        streams = [envelopes[n::FILL_STREAMS] for n in range(FILL_STREAMS)]
        await asyncio.gather(*(self._submit(stream) for stream in streams if stream))
        expected = held_before + len(envelopes)
        if not await self.wait_queued(expected, ("hold",), timeout_s=timeout_s):
            raise PostfixError(
                f"only {self.queued(('hold',)) - held_before} of {len(envelopes)} messages "
                f"reached the hold queue within {timeout_s:.0f} s:\n{self.log_tail()}"
            )

    async def _submit(self, envelopes: list[Envelope]) -> None:
        """One ``sendmail -bs`` session queueing ``envelopes`` (commands pipelined)."""
        lines = [b"EHLO bench.test"]
        for envelope in envelopes:
            lines += [
                f"MAIL FROM:<{envelope.sender}>".encode(),
                f"RCPT TO:<{envelope.recipient}>".encode(),
                b"DATA",
                envelope.content.rstrip(b"\r\n") + b"\r\n.",
            ]
        lines.append(b"QUIT")
        script = b"\r\n".join(lines) + b"\r\n"
        out = await self.command("sendmail", "-C", str(self.config_dir), "-bs", stdin=script)
        accepted = out.count("250 2.0.0 Ok: queued")
        if accepted != len(envelopes):
            raise PostfixError(
                f"sendmail -bs queued {accepted} of {len(envelopes)} messages: "
                f"{out.strip().splitlines()[-3:]}\n{self.log_tail()}"
            )

    async def release(self) -> None:
        """Take every message off hold and ask the queue manager to deliver them now."""
        await self.command("postsuper", "-c", str(self.config_dir), "-H", "ALL")
        await self.command("postqueue", "-c", str(self.config_dir), "-f")

    async def discard_all(self) -> None:
        """Delete whatever is still queued (after a run that did not finish)."""
        await self.command("postsuper", "-c", str(self.config_dir), "-d", "ALL")


class TlsSink(PostfixInstance):
    """smtpd with STARTTLS on ``listen``, passing every transaction to smtp-sink."""

    def configure(
        self,
        *,
        listen: tuple[str, int],
        sink: tuple[str, int],
        key_file: Path,
        chain_file: Path,
        compatibility_level: str,
    ) -> None:
        """Write the instance's configuration (see the class docstring)."""
        self.write_config(
            "sink-main.cf",
            "sink-master.cf",
            {
                "COMPATIBILITY_LEVEL": compatibility_level,
                "LISTEN_HOST": listen[0],
                "LISTEN_PORT": str(listen[1]),
                "SINK_HOST": sink[0],
                "SINK_PORT": str(sink[1]),
                "KEY_FILE": str(key_file),
                "CHAIN_FILE": str(chain_file),
            },
        )

    def sessions(self) -> tuple[int, int]:
        """(sessions ended, of which with STARTTLS) so far, from smtpd's disconnect lines."""
        sessions = tls = 0
        try:
            with self.maillog.open(errors="replace") as log:
                for line in log:
                    if "smtpd[" in line and " disconnect from " in line:
                        sessions += 1
                        tls += " starttls=1" in line
        except OSError:
            pass
        return sessions, tls
