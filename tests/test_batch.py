"""Batch: calls that arrive together are written in one go, each caller gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from airbourne.batch import Batch

pytestmark = pytest.mark.anyio


class Recorder:
    """A write that doubles its items, remembers each call, and can be held or failed."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None

    async def write(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 2 for item in items]


async def test_callers_waiting_together_share_one_write_and_get_their_own_results():
    recorder = Recorder()
    batch = Batch(recorder.write, "test")
    results = await asyncio.gather(*(batch.submit(n) for n in range(10)))
    assert results == [n * 2 for n in range(10)]
    assert recorder.calls == [list(range(10))]


async def test_items_arriving_during_a_write_make_the_next_one():
    recorder = Recorder()
    recorder.release.clear()
    batch = Batch(recorder.write, "test")
    first = asyncio.gather(*(batch.submit(n) for n in range(3)))
    await asyncio.sleep(0)
    second = asyncio.gather(*(batch.submit(n) for n in range(3, 5)))
    await asyncio.sleep(0)
    assert recorder.calls == [[0, 1, 2]]  # one write at a time
    recorder.release.set()
    assert await first == [0, 2, 4]
    assert await second == [6, 8]
    assert recorder.calls == [[0, 1, 2], [3, 4]]


async def test_an_exception_in_an_items_place_is_raised_to_its_caller_alone():
    async def write(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"no {item}") if item % 2 else item for item in items]

    batch = Batch(write, "test")
    outcomes = await asyncio.gather(*(batch.submit(n) for n in range(4)), return_exceptions=True)
    assert outcomes[0::2] == [0, 2]
    assert [str(outcome) for outcome in outcomes[1::2]] == ["no 1", "no 3"]


async def test_a_failed_write_fails_its_callers_only():
    recorder = Recorder()
    batch = Batch(recorder.write, "test")
    recorder.fail = OSError("disk away")
    outcomes = await asyncio.gather(*(batch.submit(n) for n in range(3)), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [OSError] * 3
    recorder.fail = None
    assert await batch.submit(7) == 14


async def test_a_cancelled_caller_does_not_disturb_the_others():
    recorder = Recorder()
    recorder.release.clear()
    batch = Batch(recorder.write, "test")
    leaving = asyncio.create_task(batch.submit(1))
    staying = asyncio.create_task(batch.submit(2))
    await asyncio.sleep(0)
    leaving.cancel()
    recorder.release.set()
    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving


@pytest.mark.parametrize("steps", [1, 3], ids=["before its first step", "while writing"])
async def test_callers_do_not_wait_forever_when_the_writer_is_cancelled(steps):
    recorder = Recorder()
    recorder.release.clear()
    batch = Batch(recorder.write, "test")
    waiting = asyncio.gather(*(batch.submit(n) for n in range(3)), return_exceptions=True)
    for _ in range(steps):
        await asyncio.sleep(0)
    assert len(recorder.calls) == (steps > 1)
    [writer] = [task for task in asyncio.all_tasks() if task.get_name() == "test"]
    writer.cancel()
    outcomes = await asyncio.wait_for(waiting, 5)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    recorder.release.set()
    assert await batch.submit(5) == 10  # a later call starts a new writer
