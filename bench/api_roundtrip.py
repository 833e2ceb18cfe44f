"""API round trips per second: ``x:MtaTlsStrategy/get`` over loopback HTTP.

    python -m bench.api_roundtrip [--quick] [--concurrency N]

Starts the management API in-process on 127.0.0.1 (free port) over a fresh SQLite store in a
temporary folder, then sends JMAP requests from a keep-alive aiohttp client for a fixed time,
with N requests in flight. Prints requests per second and latency percentiles. It never fails
on a figure; it fails only if a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from delivery import config
from delivery.api import auth, health, metrics, server
from delivery.registry.service import Registry

TOKEN = "bench-token"
BODY = {
    "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
    "methodCalls": [["x:MtaTlsStrategy/get", {"ids": None}, "c1"]],
}


async def _worker(
    session: aiohttp.ClientSession, url: str, deadline: float, latencies: list[float]
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        async with session.post(url, json=BODY, headers=headers) as response:
            answer = await response.json()
            if response.status != 200 or answer["methodResponses"][0][0] == "error":
                raise RuntimeError(f"request failed: {response.status} {answer}")
        latencies.append(time.perf_counter() - started)


async def run(duration_s: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        registry = await Registry.open(f"sqlite:///{Path(folder) / 'delivery.db'}")
        tokens = auth.TokenTable.from_settings([config.ApiToken(name="bench", secret=TOKEN)])
        try:
            async with (
                server.ApiServer(
                    registry,
                    tokens,
                    host="127.0.0.1",
                    port=0,
                    health_checks=health.HealthChecks(),
                    metrics_registry=metrics.MetricsRegistry(),
                ) as api,
                aiohttp.ClientSession() as session,
            ):
                url = api.url + "/api"
                warm: list[float] = []
                await _worker(session, url, time.perf_counter() + 0.2, warm)
                latencies: list[float] = []
                started = time.perf_counter()
                deadline = started + duration_s
                await asyncio.gather(
                    *(_worker(session, url, deadline, latencies) for _ in range(concurrency))
                )
                elapsed = time.perf_counter() - started
        finally:
            await registry.close()
    ms = sorted(latency * 1000 for latency in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"x:MtaTlsStrategy/get over loopback HTTP, {concurrency} in flight, {elapsed:.1f}s: "
        f"{len(ms) / elapsed:,.0f} round trips/s "
        f"(latency median {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run 1 second (CI smoke mode)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    args = parser.parse_args()
    asyncio.run(run(1.0 if args.quick else 10.0, args.concurrency))


if __name__ == "__main__":
    main()
