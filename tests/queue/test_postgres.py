"""What is particular to the PostgreSQL store: nodes sharing one database, durability, setup.

The QueueStore contract itself runs over this store in test_store.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import sys
import textwrap
from collections import defaultdict

import asyncpg
import pytest

from delivery.errors import ConfigError
from delivery.migrations import VERSION_TABLE
from delivery.queue import model, sql
from delivery.queue.postgres import PostgresQueueStore
from delivery.queue.store import StoreError
from tests.plugins.postgres import postgres_schema
from tests.plugins.queue import T0, make_message, make_recipient

pytestmark = pytest.mark.postgres

LEASE_MS = 20
"""Short leases, so that abandoned ones lapse within the test's simulated time."""


@dataclasses.dataclass
class Handout:
    """One recipient handed out in one lease."""

    node: str
    token: str
    start: int  # the ``now`` of the lease call
    until: int


async def test_two_nodes_never_hold_one_recipient_at_once_and_take_over_lapsed_leases() -> None:
    # Two stores (two pools: two nodes) lease, record, hold or abandon leases concurrently
    # against one database. Abandoned leases and late records exercise the takeover.
    async with postgres_schema() as url:
        nodes = [await PostgresQueueStore.open(url, max_connections=2) for _ in range(2)]
        try:
            for n in range(40):
                await nodes[0].enqueue(
                    make_message(received_at=T0 + n),
                    [make_recipient(f"r{n}-{k}@d{k % 2}.example", due=T0) for k in range(3)],
                )
            clock = [T0]
            handouts: dict[int, list[Handout]] = defaultdict(list)
            accepted: dict[int, int] = defaultdict(int)
            taken_over = 0

            async def node(name: str, store: PostgresQueueStore, rng: random.Random) -> None:
                nonlocal taken_over
                held: list[model.Lease] = []
                for _ in range(400):
                    now = clock[0]
                    clock[0] += 1
                    leases = await store.lease_due(now=now, owner=name, lease_ms=LEASE_MS, limit=5)
                    for lease in leases:
                        for rcpt in lease.recipients:
                            handouts[rcpt.id].append(Handout(name, lease.token, now, lease.until))
                    for lease in leases:
                        choice = rng.random()
                        if choice < 0.6:
                            await record(store, [lease])
                        elif choice < 0.85:
                            held.append(lease)  # recorded later, perhaps after it lapsed
                        # else: abandoned, as by a node that died
                    if held and rng.random() < 0.3:
                        late = held.pop(0)
                        result = await record(store, [late])
                        taken_over += len(result)
                    if not leases and not held and await store.due_soonest() is None:
                        return
                    await asyncio.sleep(0)

            async def record(store: PostgresQueueStore, leases: list[model.Lease]) -> set[int]:
                updates = [
                    dataclasses.replace(
                        model.RecipientUpdate.unchanged(lease, rcpt),
                        status=model.RecipientStatus.DELIVERED,
                    )
                    for lease in leases
                    for rcpt in lease.recipients
                ]
                result = await store.record(updates)
                for update in updates:
                    if update.recipient_id not in result.refused:
                        accepted[update.recipient_id] += 1
                return set(result.refused)

            await asyncio.gather(
                node("node1", nodes[0], random.Random(1)), node("node2", nodes[1], random.Random(2))
            )
            counts = await nodes[1].count_by_status()
        finally:
            for store in nodes:
                await store.close()

    assert counts[model.RecipientStatus.DELIVERED] == 120
    assert counts[model.RecipientStatus.SCHEDULED] == 0
    # Each recipient was recorded delivered once: a refused late record changed nothing.
    assert sorted(accepted.values()) == [1] * 120
    for rid, given in handouts.items():
        given.sort(key=lambda handout: handout.start)
        for before, after in itertools.pairwise(given):
            assert after.start >= before.until, (rid, before, after)  # never two at once
    assert {h.node for given in handouts.values() for h in given} == {"node1", "node2"}
    assert any(len(given) > 1 for given in handouts.values())  # leases were taken over
    assert taken_over > 0  # and some late outcome was refused for it


async def test_a_message_survives_a_killed_process() -> None:
    async with postgres_schema() as url:
        script = textwrap.dedent(f"""
            import asyncio, os
            from delivery.queue.postgres import PostgresQueueStore
            from tests.plugins.queue import make_message, make_recipient
            async def main():
                store = await PostgresQueueStore.open({url!r})
                print(await store.enqueue(make_message(), [make_recipient()]), flush=True)
                os._exit(0)  # no close: as if killed right after the 250
            asyncio.run(main())
        """)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await child.communicate()
        assert child.returncode == 0
        message_id = stdout.decode().strip()

        async with await PostgresQueueStore.open(url) as store:
            assert await store.get_message(message_id) is not None


async def test_a_lost_connection_fails_one_call_and_the_store_reconnects() -> None:
    # As when the server restarts or a proxy drops idle connections: the store's one
    # connection is terminated by the server.
    async with (
        postgres_schema() as url,
        await PostgresQueueStore.open(url, max_connections=1) as store,
    ):
        message_id = await store.enqueue(make_message(), [make_recipient()])
        pid = await store._pool.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

        outcomes: list[object] = []
        for _ in range(2):
            try:
                outcomes.append(await store.get_message(message_id))
            except StoreError as exc:
                outcomes.append(exc)
        assert isinstance(outcomes[-1], model.QueuedMessage)
        assert all(isinstance(o, StoreError | model.QueuedMessage) for o in outcomes)
        assert await store.lease_due(now=T0, owner="n", lease_ms=1_000, limit=10)


async def test_commits_are_synchronous_whatever_the_url_says() -> None:
    async with (
        postgres_schema() as url,
        await PostgresQueueStore.open(f"{url}&synchronous_commit=off") as store,
    ):
        setting = await store._pool.fetchval("SHOW synchronous_commit")
    assert setting == "on"


async def test_nodes_starting_together_on_a_new_database_all_open() -> None:
    async with postgres_schema() as url:
        stores = await asyncio.gather(*(PostgresQueueStore.open(url) for _ in range(3)))
        try:
            message_id = await stores[0].enqueue(make_message(), [make_recipient()])
            assert await stores[2].get_message(message_id) is not None
            versions = await stores[1]._pool.fetch(
                f"SELECT component, version FROM {VERSION_TABLE}"
            )
        finally:
            for store in stores:
                await store.close()
    assert [tuple(row) for row in versions] == [("queue", sql.SCHEMA_VERSION)]


async def test_a_newer_schema_is_refused() -> None:
    async with postgres_schema() as url:
        async with await PostgresQueueStore.open(url) as store:
            await store._pool.execute(f"UPDATE {VERSION_TABLE} SET version = 99")

        with pytest.raises(StoreError, match="version 99, newer than this program's"):
            await PostgresQueueStore.open(url)


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(StoreError) as refused:
        await PostgresQueueStore.open("postgresql://app:s3cret@127.0.0.1:1/delivery")
    assert "127.0.0.1:1" in str(refused.value) and "s3cret" not in str(refused.value)


@pytest.mark.parametrize("url", ["mysql://127.0.0.1/x", "postgresql://127.0.0.1:port/x"])
async def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        await PostgresQueueStore.open(url)
    assert refused.value.field == "store.url"


HOT_STATEMENTS = {
    "lease": sql.lease_candidates(sql.POSTGRES, in_queue=False),
    "lease in queue": sql.lease_candidates(sql.POSTGRES, in_queue=True),
    "due soonest": sql.DUE_SOONEST,
    "due soonest in queue": sql.DUE_SOONEST_IN_QUEUE,
    "held by token": sql.held_by_token(sql.POSTGRES),
}


@pytest.mark.parametrize("statement", HOT_STATEMENTS.values(), ids=HOT_STATEMENTS.keys())
async def test_hot_statements_have_an_index_and_never_scan_the_queue(statement: str) -> None:
    # With sequential scans priced out, a plan still scanning queue_recipients would mean
    # that no index serves the statement.
    async with postgres_schema() as url:
        async with await PostgresQueueStore.open(url):
            pass
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET enable_seqscan = off")
            text = statement.replace(":now", "1").replace(":limit", "10")
            text = text.replace(":queue", "'remote'").replace(":token", "'t'")
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {text}"))
        finally:
            await conn.close()
    assert "using queue_recipients_" in plan and "Seq Scan on queue_recipients" not in plan, plan
