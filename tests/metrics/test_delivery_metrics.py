"""GET /metrics after a batch of deliveries with known outcomes: the daemon's own components
(store, worker, API, as `delivery serve` composes them) against a harness lab of seven
domains, each a different fate: PKIX, clear text, 4xx, 5xx for one of two recipients,
MTA-STS, DANE, and TLS without authentication. Null senders, so that no DSN adds mail."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from delivery import config
from delivery.cli import serve
from delivery.harness import lab as harness_lab
from delivery.queue.sqlite import SqliteQueueStore
from tests.metrics import promtext
from tests.plugins.engine import EngineWorld
from tests.plugins.harness import MakeLab

SCENARIO: dict[str, Any] = {
    "domains": {
        "pkix.test": {"mx": [{"name": "mx1.pkix.test"}]},
        "clear.test": {"mx": [{"name": "mx1.clear.test", "tls": "none"}]},
        "defer.test": {
            "mx": [{"name": "mx1.defer.test", "tls": "none", "replies": {"rcpt": "451 4.3.0 wait"}}]
        },
        "fail.test": {
            "mx": [
                {
                    "name": "mx1.fail.test",
                    "replies": {"rcpt": {"bad@fail.test": "550 5.1.1 no such user"}},
                }
            ]
        },
        "sts.test": {"mx": [{"name": "mx1.sts.test"}], "mta_sts": {"mode": "enforce"}},
        "dane.test": {"dnssec": "secure", "mx": [{"name": "mx1.dane.test", "tlsa": ["3 1 1"]}]},
        "anon.test": {"mx": [{"name": "mx1.anon.test", "tls": "self-signed"}]},
    }
}
FIRST_WAVE = [  # one message per domain, all at once: no two attempts share a DNS name
    ["a@pkix.test", "b@pkix.test"],
    ["c@clear.test"],
    ["later@defer.test"],
    ["ok@fail.test", "bad@fail.test"],
    ["f@sts.test"],
    ["g@dane.test"],
    ["h@anon.test"],
]
SECOND_WAVE = [["a2@pkix.test"], ["f2@sts.test"]]  # domains seen: answered from the caches
ANON_TLS = {  # encrypt to anon.test without authenticating it (strategy invalid-tls)
    "match": [{"if": "rcpt_domain == 'anon.test'", "then": "'invalid-tls'"}],
    "else": "'default'",
}


@contextlib.asynccontextmanager
async def daemon(lab: harness_lab.Lab, folder: Path) -> AsyncIterator[serve.Runtime]:
    """`delivery serve`'s store, worker and API components on ``lab``."""
    data: dict[str, Any] = {
        "hostname": "mta.metrics.test",
        "store": {"url": f"sqlite://{folder}/delivery.db"},
        "api": {"listen": "127.0.0.1:0"},
        **lab.settings(),
    }
    runtime = serve.Runtime(config.Settings.model_validate(data))
    async with contextlib.AsyncExitStack() as stack:
        for component in (serve.store, serve.worker, serve.api):
            await stack.enter_async_context(component(runtime))
        yield runtime


async def scrape(runtime: serve.Runtime) -> promtext.Exposition:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{runtime.api_url}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return promtext.parse(await response.text())


async def send_all(world: EngineWorld, messages: list[list[str]], settled: int) -> None:
    for recipients in messages:
        await world.send("", recipients)
    await world.worker.wait_settled(settled, timeout_s=30)


def nonzero(exposition: promtext.Exposition, name: str) -> dict[tuple[str, ...], float]:
    """The series of ``name`` that are not 0, by label values in label-name order."""
    return {
        tuple(value for _, value in sorted(labels)): count
        for labels, count in exposition.series(name).items()
        if count
    }


async def test_metrics_count_a_batch_of_deliveries(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = await make_lab(SCENARIO)
    async with daemon(lab, tmp_path) as runtime:
        worker, queue = runtime.require_worker(), runtime.require_queue()
        assert isinstance(queue, SqliteQueueStore)
        registry = runtime.require_registry()
        world = EngineWorld(lab, runtime.settings, registry, queue, worker.resolver, worker)
        await world.outbound(tls=ANON_TLS)
        await send_all(world, FIRST_WAVE, 9)
        after_first = await scrape(runtime)
        first_queries = len(lab.dns.queries)
        await send_all(world, SECOND_WAVE, 11)
        metrics = await scrape(runtime)
        outcomes = {s.address: s.status.value for s in worker.settled}
        second_queries = len(lab.dns.queries)
    async with daemon(lab, tmp_path) as restarted:
        after_restart = await scrape(restarted)

    assert list(outcomes.values()).count("delivered") == 9, outcomes
    assert (outcomes["later@defer.test"], outcomes["bad@fail.test"]) == ("scheduled", "failed")
    # Each recorded outcome, by RFC 3464 action and last_error.
    assert nonzero(metrics, "delivery_outcomes_total") == {
        ("delivered", "none"): 9,
        ("delayed", "unexpected-reply"): 1,
        ("failed", "unexpected-reply"): 1,
    }

    # One per SMTP connection, by how it was protected: as many as the receivers accepted
    # (the second wave may reuse the first wave's pooled connections, or not).
    def connections(*hosts: str) -> int:
        return sum(lab.mx(host).connections for host in hosts)

    assert nonzero(metrics, "delivery_smtp_sessions_total") == {
        ("pkix",): connections("mx1.pkix.test", "mx1.fail.test"),
        ("clear",): connections("mx1.clear.test", "mx1.defer.test"),
        ("mta-sts",): connections("mx1.sts.test"),
        ("dane",): connections("mx1.dane.test"),
        ("none",): connections("mx1.anon.test"),  # TLS, host not authenticated
    }
    assert 2 <= connections("mx1.pkix.test", "mx1.fail.test") <= 3
    # One observation per attempt (one message and domain each).
    assert nonzero(metrics, "delivery_attempt_duration_seconds_count") == {
        ("delivered",): 7,
        ("delayed",): 1,
        ("mixed",): 1,  # ok@ and bad@fail.test
    }
    for outcome, count in (("delivered", 7), ("delayed", 1), ("mixed", 1), ("failed", 0)):
        inf = metrics.value("delivery_attempt_duration_seconds_bucket", outcome=outcome, le="+Inf")
        assert inf == count
    assert 0 < metrics.value("delivery_attempt_duration_seconds_sum", outcome="delivered") < 60
    # The queue as the store holds it, every configured virtual queue shown.
    assert nonzero(metrics, "delivery_queue_recipients") == {
        ("remote", "delivered"): 9,
        ("remote", "failed"): 1,
        ("remote", "scheduled"): 1,
    }
    assert metrics.value("delivery_queue_recipients", queue="dsn", status="scheduled") == 0
    assert len(metrics.series("delivery_queue_recipients")) == 4 * 4  # 4 queues x 4 statuses
    # After a restart: the queue is read from the store, the counters begin again.
    assert after_restart.series("delivery_queue_recipients") == metrics.series(
        "delivery_queue_recipients"
    )
    assert nonzero(after_restart, "delivery_outcomes_total") == {}
    # MTA-STS: the first sts.test attempt fetched the policy, the second read the cache.
    assert metrics.value("delivery_mta_sts_cache_misses_total") == 1
    assert metrics.value("delivery_mta_sts_cache_hits_total") == 1
    assert metrics.value("delivery_mta_sts_fetches_total", result="policy") == 1
    assert metrics.value("delivery_mta_sts_fetches_total", result="failed") == 0
    assert metrics.value("delivery_mta_sts_cache_entries") == 1
    # DNS: in the first wave each name and type missed once and was asked of the server
    # once (the DNSSEC probe's SOA query bypasses the cache). The second wave asked the
    # server nothing: it looked up again what the first attempts to its two domains had
    # (MX, MX host addresses, MTA-STS TXT), all from the cache, but not the policy host's
    # addresses (the policy came from the MTA-STS cache).
    asked = {query for query in lab.dns.queries[:first_queries] if query[1] != "SOA"}
    again = {
        (name, rtype)
        for name, rtype in asked
        if name.endswith(("pkix.test.", "sts.test.")) and not name.startswith("mta-sts.")
    }
    assert after_first.value("delivery_dns_cache_misses_total") == len(asked)
    assert after_first.value("delivery_dns_cache_hits_total") == 0
    assert second_queries == first_queries
    assert metrics.value("delivery_dns_cache_misses_total") == len(asked)
    assert metrics.value("delivery_dns_cache_hits_total") == len(again)
    assert metrics.value("delivery_dns_cache_hits_total") == worker.resolver.cache.hits
    assert metrics.value("delivery_dns_cache_entries") == len(worker.resolver.cache)
