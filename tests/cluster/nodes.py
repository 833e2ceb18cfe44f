"""Several `delivery serve` nodes on one PostgreSQL schema, and what the receivers saw of them.

`Cluster` holds one harness lab (one MX host per domain, clear text: the work measured is the
engine's, not TLS) and the URL of a fresh schema. `start_nodes` writes one settings file per
node and starts the daemons: each has its own ``hostname`` (its EHLO name and lease owner),
API port and PostgreSQL ``application_name``, and the lab's resolver. `queue_messages` puts
numbered messages straight into the shared queue, round robin over the domains; `arrivals`
reads every copy the receivers accepted, by number and by node, and `accepted_at` when;
`peak_in_progress` is the most deliveries one node had between MAIL and the accepted message
at any moment, from the receivers' clocks (`peak_overall`: all nodes together).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from delivery.harness import lab as harness_lab
from delivery.harness import smtp_server
from delivery.queue import model
from delivery.queue.postgres import PostgresQueueStore
from delivery.registry import Registry
from tests.plugins.api import USING, Daemon, StartDaemon, free_port
from tests.plugins.registry import set_ok

__all__ = [
    "ADMIN_TOKEN",
    "DOMAINS",
    "Arrival",
    "Cluster",
    "accepted_at",
    "arrivals",
    "call",
    "configure",
    "node_name",
    "peak_in_progress",
    "peak_overall",
    "queue_messages",
    "scenario",
    "start_nodes",
]

DOMAINS = ("a.cluster.test", "b.cluster.test", "c.cluster.test")
ADMIN_TOKEN = "cluster-admin-token"
"""Every node's API token, with every permission."""
QUEUE_BATCH = 500
"""Messages per enqueue transaction while filling the queue."""
_NUMBER = re.compile(rb"^Message-ID: <m(\d+)@cluster\.test>", re.MULTILINE)


def scenario() -> dict[str, object]:
    """One MX host per domain, no STARTTLS."""
    return {"domains": {d: {"mx": [{"name": f"mx.{d}", "tls": "none"}]} for d in DOMAINS}}


def node_name(index: int, /) -> str:
    """The hostname (EHLO name, lease owner) of node ``index``."""
    return f"node{index}.cluster.test"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The lab the nodes deliver to and the database they share."""

    lab: harness_lab.Lab
    url: str
    workdir: Path
    tag: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Tells this cluster's connections from those of other clusters on the same server."""

    def application_name(self, node: str, /) -> str:
        """The PostgreSQL ``application_name`` of ``node``'s connections."""
        return f"{node}/{self.tag}"

    def receivers(self) -> list[smtp_server.SmtpReceiver]:
        """The MX host of every domain."""
        return [self.lab.mx(f"mx.{domain}") for domain in DOMAINS]


async def configure(url: str, /, *, threads_per_node: int) -> None:
    """Before the nodes start: ``threadsPerNode`` of the ``remote`` queue, and retries after
    a second (a deferral must not stall the test for the default two minutes)."""
    async with await Registry.open(url, refresh_interval_ms=None) as registry:
        queues = await registry.query("MtaVirtualQueue", filter={"name": "remote"}, sort=None)
        await set_ok(
            registry,
            "MtaVirtualQueue",
            update={queues["ids"][0]: {"threadsPerNode": threads_per_node}},
        )
        schedules = await registry.query(
            "MtaDeliverySchedule", filter={"name": "remote"}, sort=None
        )
        await set_ok(
            registry, "MtaDeliverySchedule", update={schedules["ids"][0]: {"retry": [1000]}}
        )


async def start_nodes(
    cluster: Cluster, start_daemon: StartDaemon, count: int, /, *, lease: str = "31m"
) -> list[Daemon]:
    """Start ``count`` nodes on the cluster's database; returns them once all listen."""
    settings_files = []
    for index in range(1, count + 1):
        folder = cluster.workdir / f"node{index}"
        folder.mkdir(parents=True, exist_ok=True)
        settings = folder / "delivery.toml"
        url = with_application_name(cluster.url, cluster.application_name(node_name(index)))
        settings.write_text(
            f'hostname = "{node_name(index)}"\n'
            f'[store]\nurl = "{url}"\n'
            f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[[api.tokens]]\nname = "admin"\nsecret = "{ADMIN_TOKEN}"\n'
            '[submission]\nlisten = "127.0.0.1:0"\n'
            "[tlsrpt]\nenabled = false\n"
            f'[worker]\nlease = "{lease}"\n' + cluster.lab.settings_toml()
        )
        settings_files.append(settings)
    return list(await asyncio.gather(*(start_daemon(path) for path in settings_files)))


def with_application_name(url: str, name: str, /) -> str:
    """``url`` whose connections tell the server they are ``name``'s (pg_stat_activity)."""
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("application_name", name)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def message(number: int, /) -> bytes:
    """Message ``number``: its number is in its Message-ID."""
    return (
        f"Message-ID: <m{number}@cluster.test>\r\nSubject: cluster {number}\r\n\r\n"
        f"message {number}\r\n"
    ).encode()


async def call(http: aiohttp.ClientSession, daemon: Daemon, method: str, **arguments: Any) -> Any:
    """One JMAP method call to ``daemon``'s API; its response arguments."""
    body = {"using": USING, "methodCalls": [[method, arguments, "c"]]}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.post(f"{daemon.url}/api", json=body, headers=headers) as response:
        answer = await response.json()
    [[name, result, _]] = answer["methodResponses"]
    assert name == method, result
    return result


async def queue_messages(url: str, count: int, /) -> list[str]:
    """Queue messages 0..count-1 (message n to domain n mod 3), due now; their queue ids."""
    now = model.now_ms()
    entries = [
        (
            model.NewMessage(
                sender="sender@origin.test",
                body=message(n),
                source=model.MessageSource.AUTHENTICATED,
                received_at=now,
            ),
            [
                model.NewRecipient(
                    f"r{n}@{DOMAINS[n % len(DOMAINS)]}",
                    queue="remote",
                    schedule="remote",
                    due=now,
                    expires_at=now + 86_400_000,
                )
            ],
        )
        for n in range(count)
    ]
    store = await PostgresQueueStore.open(url)
    try:
        ids = []
        for start in range(0, count, QUEUE_BATCH):
            ids += await store.enqueue_many(entries[start : start + QUEUE_BATCH])
        return ids
    finally:
        await store.close()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One accepted copy of a numbered message."""

    number: int
    node: str | None
    """The EHLO name it came under: the node that delivered it."""


def arrivals(receivers: Iterable[smtp_server.SmtpReceiver], /) -> list[Arrival]:
    """Every copy the receivers accepted, in no particular order."""
    out = []
    for receiver in receivers:
        for received in receiver.received:
            found = _NUMBER.search(received.body)
            assert found is not None, received.body[:200]
            out.append(Arrival(int(found.group(1)), received.ehlo))
    return out


def accepted_at(
    receivers: Iterable[smtp_server.SmtpReceiver], /
) -> dict[int, list[tuple[str | None, float]]]:
    """Per message number: (node, time.monotonic() it was accepted) of each copy.

    A receiver's messages and its sessions' transactions are both in order; those of one
    client address and port belong to the sessions from it, one after the other.
    """
    out: dict[int, list[tuple[str | None, float]]] = collections.defaultdict(list)
    for receiver in receivers:
        spans: dict[tuple[str, int], list[tuple[float, float]]] = collections.defaultdict(list)
        for session in receiver.sessions:
            spans[session.peer].extend(session.transactions)
        taken: collections.Counter[tuple[str, int]] = collections.Counter()
        for received in receiver.received:
            found = _NUMBER.search(received.body)
            assert found is not None, received.body[:200]
            _, accepted = spans[received.peer][taken[received.peer]]
            taken[received.peer] += 1
            out[int(found.group(1))].append((received.ehlo, accepted))
    return out


def peak_in_progress(receivers: Iterable[smtp_server.SmtpReceiver], /) -> dict[str, int]:
    """Per EHLO name (node): the most transactions it had in progress at once, anywhere."""
    spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for receiver in receivers:
        for session in receiver.sessions:
            spans[session.ehlo or "?"].extend(session.transactions)
    return {node: _peak(found) for node, found in spans.items()}


def peak_overall(receivers: Iterable[smtp_server.SmtpReceiver], /) -> int:
    """The most transactions in progress at once, all nodes together."""
    return _peak([t for r in receivers for s in r.sessions for t in s.transactions])


def _peak(spans: Sequence[tuple[float, float]]) -> int:
    """The most intervals covering one instant (an end before a start at the same time).

    >>> _peak([(0, 2), (1, 3), (2, 4), (5, 6)])
    2
    """
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
