"""Three `delivery serve` nodes (separate processes) on one PostgreSQL database.

What an operator running several nodes relies on, counted by the receivers: 3,000 messages
queued once arrive exactly once; no node ever has more deliveries in progress than the
virtual queue's ``threadsPerNode``; when a node is killed (SIGKILL) in the middle, the work it
held is delivered by the others once its lease has run out, nothing is lost, and the only
messages that arrive twice are deliveries the dead node had in progress. And a change made
through one node's API reaches the engine of the others within seconds.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from delivery.queue import model
from delivery.queue.postgres import PostgresQueueStore
from tests.cluster import nodes
from tests.plugins.api import Daemon, StartDaemon
from tests.plugins.harness import MakeLab
from tests.plugins.postgres import postgres_schema

pytestmark = pytest.mark.postgres

MESSAGES = 3000
NODES = 3
THREADS_PER_NODE = 8
DELIVERY_TIMEOUT_S = 90.0
"""How long 3,000 messages may take to arrive: 10 to 30 s on two cores, depending on what else
runs; the margin is for a machine shared with other work."""
KILL_AFTER = 900
"""Messages delivered before the SIGKILL: the middle of the run."""
LEASE = "4s"
"""The nodes' ``[worker] lease`` in the kill test: the dead node's work is taken over after it."""
PROPAGATION_S = 5.0
"""A change through one node's API is in every node's engine within this (the registries look
for changes every second)."""
CLOCK_SLACK_S = 0.5
"""Between the epoch clock of the lease times and this process's monotonic clock (both read
at the kill, a few milliseconds apart), and the nodes' clocks (the same machine's)."""


@pytest.fixture
async def cluster(make_lab: MakeLab, tmp_path: Path) -> AsyncIterator[nodes.Cluster]:
    lab = await make_lab(nodes.scenario())
    async with postgres_schema() as url:
        await nodes.configure(url, threads_per_node=THREADS_PER_NODE)
        yield nodes.Cluster(lab, url, tmp_path)


async def wait_until_drained(url: str, *, within: float) -> None:
    """Until no recipient is left scheduled (every outcome recorded by some node)."""
    store = await PostgresQueueStore.open(url)
    try:
        async with asyncio.timeout(within):
            while True:  # no event crosses the process boundary
                counts = await store.count_by_status()
                if counts[model.RecipientStatus.SCHEDULED] == 0:
                    return
                await asyncio.sleep(0.2)
    finally:
        await store.close()


async def stop_all(daemons: list[Daemon]) -> None:
    """SIGTERM the nodes still running and wait for them (before their schema is dropped)."""
    for daemon in daemons:
        if daemon.process.returncode is None:
            assert await daemon.stop(signal.SIGTERM) == 0, daemon.output


async def test_three_nodes_deliver_every_message_once_within_their_limits(
    cluster: nodes.Cluster, start_daemon: StartDaemon
) -> None:
    daemons = await nodes.start_nodes(cluster, start_daemon, NODES)
    try:
        await nodes.queue_messages(cluster.url, MESSAGES)
        for receiver in cluster.receivers():
            await receiver.wait_for_messages(MESSAGES // 3, within=DELIVERY_TIMEOUT_S)
        await wait_until_drained(cluster.url, within=DELIVERY_TIMEOUT_S)
    finally:
        await stop_all(daemons)

    got = nodes.arrivals(cluster.receivers())
    copies = collections.Counter(a.number for a in got)
    assert sorted(copies) == list(range(MESSAGES))  # every message arrived ...
    assert {n: c for n, c in copies.items() if c > 1} == {}  # ... exactly once
    by_node = collections.Counter(a.node for a in got)
    assert set(by_node) == {nodes.node_name(i) for i in range(1, NODES + 1)}
    assert min(by_node.values()) >= MESSAGES // 20, by_node  # every node took a share
    peaks = nodes.peak_in_progress(cluster.receivers())
    assert max(peaks.values()) <= THREADS_PER_NODE, peaks  # threadsPerNode holds per node
    everyone = nodes.peak_overall(cluster.receivers())
    assert everyone > THREADS_PER_NODE, peaks  # ... and not for the cluster as a whole
    print(f"delivered per node: {dict(by_node)}; most in progress per node: {peaks}")


async def test_a_killed_nodes_work_is_taken_over_after_its_lease(
    cluster: nodes.Cluster, start_daemon: StartDaemon
) -> None:
    daemons = await nodes.start_nodes(cluster, start_daemon, NODES, lease=LEASE)
    victim, victim_name = daemons[1], nodes.node_name(2)
    try:
        ids = await nodes.queue_messages(cluster.url, MESSAGES)
        number_of = {message_id: n for n, message_id in enumerate(ids)}
        for receiver in cluster.receivers():
            await receiver.wait_for_messages(KILL_AFTER // 3, within=DELIVERY_TIMEOUT_S)
        victim.process.send_signal(signal.SIGKILL)
        killed_at, killed_ms = time.monotonic(), model.now_ms()
        await victim.process.wait()
        await connections_gone(cluster.url, cluster.application_name(victim_name))
        held = await leases_of(cluster.url, victim_name)  # what it held when it died
        for receiver in cluster.receivers():
            await receiver.wait_for_messages(MESSAGES // 3, within=DELIVERY_TIMEOUT_S)
        await wait_until_drained(cluster.url, within=DELIVERY_TIMEOUT_S)
    finally:
        await stop_all(daemons)

    got = nodes.arrivals(cluster.receivers())
    copies = collections.Counter(a.number for a in got)
    assert sorted(copies) == list(range(MESSAGES))  # nothing lost
    assert any(a.node == victim_name for a in got)  # it took part before it died
    peaks = nodes.peak_in_progress(cluster.receivers())
    assert max(peaks.values()) <= THREADS_PER_NODE, peaks  # the takeover too

    # What it held when it died: no more than it may run at once, taken over by the others
    # once the lease ran out, not before.
    assert 0 < len(held) <= THREADS_PER_NODE, held
    timeline = nodes.accepted_at(cluster.receivers())
    for message_id, lease_until in held:
        number = number_of[message_id]
        taken_over = [at for node, at in timeline[number] if node != victim_name]
        assert taken_over, f"message {number}, held by the dead node, was not taken over"
        lapsed_at = killed_at + (lease_until - killed_ms) / 1000
        assert min(taken_over) >= lapsed_at - CLOCK_SLACK_S, (number, lapsed_at - killed_at)

    # At least once: a message came twice only if the dead node had it in progress (held,
    # delivered, not yet recorded), and at most twice.
    held_numbers = {number_of[message_id] for message_id, _ in held}
    twice = {n: c for n, c in copies.items() if c > 1}
    assert set(twice) <= held_numbers, (twice, held_numbers)
    assert all(c == 2 for c in twice.values()), twice
    print(f"held by the dead node: {len(held)}; delivered twice: {len(twice)}")


async def test_a_change_through_one_node_reaches_every_node_within_seconds(
    cluster: nodes.Cluster, start_daemon: StartDaemon
) -> None:
    """The engine of every node follows a change made through any node's API."""
    first, second = await nodes.start_nodes(cluster, start_daemon, 2)
    try:
        async with aiohttp.ClientSession() as http:
            found = await nodes.call(
                http, first, "x:MtaVirtualQueue/query", filter={"name": "remote"}
            )
            changed = time.monotonic()
            await nodes.call(
                http,
                first,
                "x:MtaVirtualQueue/set",
                update={found["ids"][0]: {"threadsPerNode": 3}},
            )
            async with asyncio.timeout(PROPAGATION_S):
                while True:  # no event crosses the process boundary: ask until it shows
                    explained = await nodes.call(
                        http, second, "x:Explain/get", recipient=f"x@{nodes.DOMAINS[0]}"
                    )
                    if explained["list"][0]["queue"]["threadsPerNode"] == 3:
                        break
                    await asyncio.sleep(0.1)
        print(f"the change reached the other node's engine in {time.monotonic() - changed:.2f} s")
    finally:
        await stop_all([first, second])


async def connections_gone(url: str, application_name: str, /) -> None:
    """Until the server has ended every connection of a node (by ``application_name``): a
    COMMIT the node sent before it died has then landed, or never will."""
    connection = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 10
        while True:  # no event: the server ends them when it notices
            left = await connection.fetch(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
                application_name,
            )
            if not left:
                return
            assert time.monotonic() < deadline, [dict(row) for row in left]
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def leases_of(url: str, owner: str, /) -> list[tuple[str, int]]:
    """(message id, lease end in epoch ms) of the scheduled recipients ``owner`` holds."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT message_id, lease_until FROM queue_recipients"
            " WHERE lease_owner = $1 AND status = 'scheduled'",
            owner,
        )
    finally:
        await connection.close()
    return [(str(row[0]), int(row[1])) for row in rows]
