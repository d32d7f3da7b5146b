"""The asyncio side of update handling: a claimed batch crosses once, its updates run here.

Handing each update over on its own cost two crossings of the seam (a task on each side,
a wake-up of each thread) per update. The inbox hands a whole claimed batch over in one
crossing (``ChatChains.run_batch``). Here, each chat's updates run one after another in
one asyncio task, in claim order across batches (batches arrive in the order they were
claimed), and chats run concurrently. Every finished update is reported to trio's side
through ``report``, and reports that pile up while trio has not taken them yet travel
together in one hand-over, so settling needs no crossing per update either.

An update is reported once: finished (what its handler returned, or the exception that
escaped it), or not at all when it was never run to its end (a stop before it started, a
cancellation while it ran): trio's side releases those once ``run_batch`` returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from runtime.logs import new_correlation_id
from runtime.storage.inbox import InboxUpdate

RunOne = Callable[[InboxUpdate, str], Awaitable[Any]]
"""Runs one update's handlers on the asyncio side, given its correlation id."""


@dataclasses.dataclass(slots=True, eq=False)
class Batch:
    """One claimed batch on its way through the chains."""

    number: int
    """The claim's number: an update's sender record is dropped when an update of its chat
    finished after this claim started (the record may be stale)."""
    updates: Sequence[InboxUpdate]
    reported: list[bool]
    """Per update, set on trio's side when its report arrived."""
    left: int = 0
    """Updates neither reported nor abandoned yet (asyncio's side)."""
    idle: asyncio.Future[None] | None = None


@dataclasses.dataclass(slots=True)
class Report:
    batch: Batch
    index: int
    correlation_id: str
    result: Any
    error: Exception | None


class ChatChains:
    """Per chat, the updates handed over and not finished yet (asyncio's side only, but
    ``report`` and ``stopping`` are called from it: see their descriptions)."""

    def __init__(
        self,
        run_one: RunOne,
        *,
        timeout: float,
        report: Callable[[list[Report]], None],
        hand_over: Callable[[Callable[[], None]], None],
        claims: Callable[[], int],
        stopping: Callable[[], bool],
    ) -> None:
        """``report`` runs on trio's side with the reports that arrived; ``hand_over``
        queues a plain function there; ``claims`` reads the number of the latest claim
        started; ``stopping`` tells whether updates not started yet should be left."""
        self._run_one = run_one
        self._timeout = timeout
        self._report = report
        self._hand_over = hand_over
        self._claims = claims
        self._stopping = stopping
        self._chats: dict[object, deque[tuple[Batch, int]]] = {}
        self._runners: dict[object, asyncio.Task[None]] = {}
        self._finished_at: dict[object, int] = {}
        """Per chat, the latest claim number started when one of its updates finished."""
        self._outgoing: deque[Report] = deque()
        self._sending = False

    async def run_batch(self, batch: Batch, keys: Sequence[object]) -> None:
        """Queue ``batch`` (``keys[i]`` is the chat of its update ``i``) behind what its
        chats have in hand; return when each of its updates was reported or abandoned.
        Cancelled, it cancels the chats running its updates and waits for them."""
        batch.left = len(batch.updates)
        batch.idle = asyncio.get_running_loop().create_future()
        mine: set[object] = set()
        for index, key in enumerate(keys):
            mine.add(key)
            queue = self._chats.get(key)
            if queue is not None:
                queue.append((batch, index))
                continue
            self._chats[key] = deque([(batch, index)])
            self._runners[key] = asyncio.ensure_future(self._run_chat(key))
        # A chat with nothing in hand next gets an update of this batch or a later one.
        stale = [
            key
            for key, number in self._finished_at.items()
            if number < batch.number and key not in self._chats
        ]
        for key in stale:
            del self._finished_at[key]
        if batch.left == 0:
            return
        try:
            await asyncio.shield(batch.idle)
        except asyncio.CancelledError:
            running = [self._runners[key] for key in mine if key in self._runners]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _run_chat(self, key: object) -> None:
        queue = self._chats[key]
        try:
            while queue:
                batch, index = queue[0]
                if self._stopping():
                    break
                update = batch.updates[index]
                if update.sender is not None and self._finished_at.get(key, -1) >= batch.number:
                    update = dataclasses.replace(update, sender=None)
                correlation_id = new_correlation_id()
                result: Any = None
                error: Exception | None = None
                try:
                    result = await self._run_timed(update, correlation_id)
                except Exception as exc:
                    error = exc
                queue.popleft()
                self._finished_at[key] = self._claims()
                self._send(Report(batch, index, correlation_id, result, error))
                _count_down(batch)
        finally:
            del self._chats[key]
            del self._runners[key]
            for batch, _ in queue:
                _count_down(batch)

    async def _run_timed(self, update: InboxUpdate, correlation_id: str) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._run_one(update, correlation_id)
        except TimeoutError as exc:
            raise trio.TooSlowError(f"the handler took over {self._timeout} s") from exc

    def _send(self, report: Report) -> None:
        self._outgoing.append(report)
        if not self._sending:
            self._sending = True
            self._hand_over(self._deliver)

    def _deliver(self) -> None:
        """On trio's side: take every report that arrived (see ``_send``: a report added
        after ``_sending`` was cleared schedules another delivery)."""
        self._sending = False
        reports: list[Report] = []
        while self._outgoing:
            reports.append(self._outgoing.popleft())
        if reports:
            self._report(reports)


def _count_down(batch: Batch) -> None:
    batch.left -= 1
    if batch.left == 0 and batch.idle is not None and not batch.idle.done():
        batch.idle.set_result(None)
