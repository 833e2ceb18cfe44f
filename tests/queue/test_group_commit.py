"""group_commit: what arrives during a write shares the next one; failures reach their batch."""

from __future__ import annotations

import asyncio

import pytest

from delivery.queue.group_commit import GroupCommit


class Writer:
    """A write that records its batches and waits for the test to let it finish."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.fail_on: str | None = None

    async def __call__(self, batch: list[str]) -> list[str]:
        self.batches.append(batch)
        self.started.set()
        await self.go.wait()
        if self.fail_on in batch:
            raise OSError("disk full")
        return [item.upper() for item in batch]


async def test_submissions_during_a_write_share_the_next_one() -> None:
    writer = Writer()
    group = GroupCommit(writer, name="test")
    first = asyncio.ensure_future(group.submit(["a"]))
    await writer.started.wait()
    later = [asyncio.ensure_future(group.submit([x, x + x])) for x in "bcd"]
    await asyncio.sleep(0)
    writer.go.set()

    assert await first == ["A"]
    assert [await task for task in later] == [["B", "BB"], ["C", "CC"], ["D", "DD"]]
    assert writer.batches == [["a"], ["b", "bb", "c", "cc", "d", "dd"]]


async def test_a_failed_write_fails_its_batch_only() -> None:
    writer = Writer()
    writer.fail_on = "a"
    group = GroupCommit(writer, name="test")
    first = asyncio.ensure_future(group.submit(["a"]))
    await writer.started.wait()
    second = asyncio.ensure_future(group.submit(["b"]))
    await asyncio.sleep(0)
    writer.go.set()

    with pytest.raises(OSError, match="disk full"):
        await first
    assert await second == ["B"]


async def test_a_submission_cancelled_before_its_write_is_not_written() -> None:
    writer = Writer()
    group = GroupCommit(writer, name="test")
    first = asyncio.ensure_future(group.submit(["a"]))
    await writer.started.wait()
    withdrawn = asyncio.ensure_future(group.submit(["x"]))
    kept = asyncio.ensure_future(group.submit(["b"]))
    await asyncio.sleep(0)
    withdrawn.cancel()
    writer.go.set()

    assert (await first, await kept) == (["A"], ["B"])
    assert withdrawn.cancelled()
    await group.drain()
    assert writer.batches == [["a"], ["b"]]
