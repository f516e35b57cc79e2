"""ferroute.app.worker.HeapTrim: the heap's free pages given back after a dropped client, at most so often."""

from __future__ import annotations

import asyncio

import pytest

from ferroute.app import worker
from ferroute.app.worker import HeapTrim


def test_drops_close_together_make_one_trim_and_later_ones_wait_for_the_interval() -> None:
    async def run() -> list[int]:
        heap = HeapTrim(delay=0.01, interval=0.2)
        seen = []
        for _ in range(5):  # five drops at once: one trim
            heap.soon()
        await asyncio.sleep(0.1)
        seen.append(heap.trims)
        heap.soon()  # within the interval: waits for it
        await asyncio.sleep(0.05)
        seen.append(heap.trims)
        await asyncio.sleep(0.2)
        seen.append(heap.trims)
        return seen

    assert asyncio.run(run()) == [1, 1, 2]


def test_without_malloc_trim_nothing_is_scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "_malloc_trim", lambda: None)

    async def run() -> int:
        heap = HeapTrim(delay=0.0)
        heap.soon()
        await asyncio.sleep(0.05)
        return heap.trims

    assert asyncio.run(run()) == 0
