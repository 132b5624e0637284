"""Doing the work of calls that arrive together in one go.

Under load many tasks each want the same costly step done for one item: a statement to the
database, a hand-off to a worker thread. A `Batch` runs its `write` on every item waiting,
one call at a time; items that arrive while a call runs make the next one. Each caller still
returns only once its own item is done, with its own result, or raises its own exception
(returned by `write` in its item's place) or the exception that failed the whole call.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batch(Generic[Item, Result]):
    def __init__(
        self, write: Callable[[list[Item]], Awaitable[list[Result | BaseException]]], name: str
    ) -> None:
        """`write(items)` returns one result per item, in their order; an exception as an
        item's result is raised to that item's caller alone."""
        self.write = write
        self.name = name
        self._waiting: list[tuple[Item, asyncio.Future[Result | BaseException]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result | BaseException] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_waiting(), name=self.name)
            self._writing.add_done_callback(self._stopped)
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _write_waiting(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result | BaseException]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self.write([item for item, _ in batch])
                except Exception as exc:  # every caller of the call gets it
                    _settle(batch, exception=exc)
                else:
                    _settle(batch, results)
        except BaseException as exc:  # cancelled at shutdown: no caller waits forever
            _settle(batch + self._waiting, exception=exc)
            self._waiting = []
            raise
        finally:
            self._writing = None

    def _stopped(self, writer: asyncio.Task[None]) -> None:
        """A writer cancelled before its first step took nothing: fail what it would have
        taken, so that no caller waits forever."""
        if self._writing is writer:
            self._writing = None
            _settle(self._waiting, exception=asyncio.CancelledError())
            self._waiting = []


def _settle(
    batch: list[tuple[Item, asyncio.Future[Result | BaseException]]],
    results: list[Result | BaseException] | None = None,
    exception: BaseException | None = None,
) -> None:
    """Give each caller its result, or all of them `exception`."""
    for index, (_, future) in enumerate(batch):
        if future.done():  # its caller was cancelled
            continue
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(results[index])


async def outcome(call: Awaitable[Result]) -> Result | Exception:
    """What `call` returns, or the exception it raises: as the result of one item of a
    `write`, for that item's caller alone."""
    try:
        return await call
    except Exception as exc:
        return exc
