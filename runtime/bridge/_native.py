"""A native asyncio loop (uvloop or asyncio's own) in a thread of its own, reached from trio.

Each crossing is one hand-over each way: trio posts the call with
``loop.call_soon_threadsafe`` and the asyncio side answers with
``TrioToken.run_sync_soon``; both queues are first in, first out. asyncpg's and aiohttp's
callbacks then run on a plain event loop, at plain asyncio's cost.

Cancellation is waited for, both ways: a trio caller cancelled while its asyncio task runs
raises ``Cancelled`` only once that task has finished (its ``finally`` and ``async with``
blocks have run), and an asyncio caller cancelled while its trio task runs raises
``CancelledError`` only once that task has finished. ``asyncio.run_coroutine_threadsafe``
would not do: its future reports cancelled at once, before the task's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import outcome
import trio

from runtime.logs import get_logger

from ._seam import LeakReport, guarded, leak_handler, register, unregister

T = TypeVar("T")

SHUTDOWN_SECONDS = 10.0
"""How long closing waits for the asyncio tasks still running to finish their cleanup."""

_log = get_logger("bridge")


class _Cancelled:
    """What a trio task that was cancelled hands back to its asyncio caller."""


_CANCELLED = _Cancelled()


class _AsyncioCall(Generic[T]):
    """A trio task waiting for an asyncio task."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seam: NativeSeam,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.seam = seam
        self.waiter = trio.lowlevel.current_task()
        self.task: asyncio.Future[T] | None = None
        self.raise_cancel: Callable[[], Any] | None = None
        self.answered = False

    # asyncio's side

    def start(self) -> None:
        try:
            self.task = asyncio.ensure_future(self.fn(*self.args, **self.kwargs))
        except BaseException as exc:  # it belongs to the trio caller
            self.answer(outcome.Error(exc))
            return
        self.task.add_done_callback(self.finished)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def finished(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            self.answer(outcome.Error(asyncio.CancelledError()))
            return
        exc = task.exception()
        self.answer(outcome.Value(task.result()) if exc is None else outcome.Error(exc))

    def answer(self, result: outcome.Outcome[T]) -> None:
        if self.answered:
            return
        self.answered = True
        self.seam.pending.discard(self)
        self.seam.to_trio(trio.lowlevel.reschedule, (self.waiter, result))

    # trio's side

    def abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        self.raise_cancel = raise_cancel
        # A closed loop answered every call as it closed.
        with contextlib.suppress(RuntimeError):
            self.seam.loop.call_soon_threadsafe(self.cancel)
        return trio.lowlevel.Abort.FAILED


class _TrioCall(Generic[T]):
    """An asyncio task waiting for a trio task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.result: outcome.Outcome[T] | _Cancelled | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def deliver(self, result: outcome.Outcome[T] | _Cancelled) -> None:
        self.result = result
        if not self.waiter.done():
            self.waiter.set_result(None)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


class NativeSeam:
    """The seam to a native loop running in its own thread (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, report: LeakReport | None) -> None:
        self.loop = loop
        self._token = trio.lowlevel.current_trio_token()
        self._clock = trio.lowlevel.current_clock()
        self._closing = False
        self.pending: set[_AsyncioCall[Any]] = set()
        """Calls posted to asyncio and not answered yet (answered all when the loop stops)."""
        self._close_requested: asyncio.Future[None] = loop.create_future()
        self._trio_tasks: set[trio.CancelScope] = set()
        self._trio_tasks_done = trio.Event()
        self._stopped = trio.Event()
        self._thread = threading.Thread(target=self._main, name="asyncio-loop", daemon=True)
        loop.set_exception_handler(leak_handler(report, self.soon_in_trio))

    # -- the two directions ----------------------------------------------------------------

    async def run_asyncio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        if self._closing:
            raise RuntimeError("the asyncio loop is closed")
        call = _AsyncioCall(fn, args, kwargs, self)
        self.pending.add(call)
        try:
            self.loop.call_soon_threadsafe(call.start, context=contextvars.copy_context())
        except RuntimeError:  # the loop is closed: its thread failed
            self.pending.discard(call)
            raise
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(call.abort)
        except asyncio.CancelledError:
            if call.raise_cancel is not None:
                call.raise_cancel()  # our own cancellation came back: trio's Cancelled
            raise  # the asyncio side cancelled the task itself
        return result

    async def call_trio(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        call: _TrioCall[T] = _TrioCall(self.loop)
        context = contextvars.copy_context()
        try:
            self._token.run_sync_soon(self._spawn, call, fn, args, kwargs, context)
        except trio.RunFinishedError:
            raise RuntimeError("trio is not running any more") from None
        cancelled: asyncio.CancelledError | None = None
        while call.result is None:
            try:
                await call.waiter
            except asyncio.CancelledError as exc:
                # Ask trio to cancel, and wait for the task to finish, as asyncio would for
                # a task of its own; a second cancellation does not cut the wait short.
                if cancelled is None:
                    cancelled = exc
                    self.to_trio(call.cancel, ())
                call.waiter = self.loop.create_future()
        result = call.result
        if isinstance(result, _Cancelled):
            raise cancelled if cancelled is not None else asyncio.CancelledError()
        if cancelled is not None and isinstance(result, outcome.Value):
            raise cancelled
        return result.unwrap()

    def soon_in_trio(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        if trio.lowlevel.in_trio_run():
            guarded(fn, *args)
            return
        context = contextvars.copy_context()
        self.to_trio(context.run, (guarded, fn, *args))

    def trio_time(self) -> float:
        return self._clock.current_time()

    # -- on trio's thread ------------------------------------------------------------------

    def to_trio(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Queue ``fn(*args)`` on trio's thread; nothing is left to do once trio is gone."""
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _spawn(
        self,
        call: _TrioCall[T],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        # A system task: its lifetime is its asyncio caller's, not that of whichever trio
        # task happened to open the loop. Closing the loop cancels what is left of them.
        trio.lowlevel.spawn_system_task(
            self._run_trio, call, fn, args, kwargs, context=context, name=fn
        )

    async def _run_trio(
        self,
        call: _TrioCall[T],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        result: outcome.Outcome[T] | _Cancelled = _CANCELLED
        scope = trio.CancelScope()
        self._trio_tasks.add(scope)
        try:
            with scope:
                call.scope = scope
                if call.cancel_requested:
                    scope.cancel()
                result = outcome.Value(await fn(*args, **kwargs))
        except trio.Cancelled:
            raise  # the whole run is ending: the asyncio caller hears it was cancelled
        except BaseException as exc:  # it belongs to the asyncio caller
            result = _without_cancelled(exc)
        finally:
            self._trio_tasks.discard(scope)
            if not self._trio_tasks and self._closing:
                self._trio_tasks_done.set()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self.loop.call_soon_threadsafe(call.deliver, result)

    # -- opening and closing ---------------------------------------------------------------

    def start(self) -> None:
        register(self)
        self._thread.start()

    async def close(self) -> None:
        """Cancel what still runs on the asyncio side, let it clean up, stop the thread.
        Bounded by ``SHUTDOWN_SECONDS`` and shielded: a cancelled trio does not hang here,
        and leaves nothing half closed."""
        self._closing = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SHUTDOWN_SECONDS) as late:
                with contextlib.suppress(RuntimeError):  # closed already: the thread failed
                    self.loop.call_soon_threadsafe(_resolve, self._close_requested)
                await self._stopped.wait()
            if late.cancelled_caught:
                _log.error(
                    "the asyncio loop did not stop in time; leaving its thread behind",
                    operation="bridge.close",
                    failure_type="bug",
                    outcome="failed",
                    seconds=SHUTDOWN_SECONDS,
                )
            else:
                self._thread.join(timeout=SHUTDOWN_SECONDS)
            for scope in list(self._trio_tasks):
                scope.cancel()
            if self._trio_tasks:
                with trio.move_on_after(SHUTDOWN_SECONDS):
                    await self._trio_tasks_done.wait()
        unregister(self)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException:  # nothing may escape a thread unseen
            _log.exception(
                "the asyncio loop failed",
                operation="bridge.loop",
                failure_type="bug",
                outcome="failed",
            )
        finally:
            try:
                self.loop.close()
            finally:
                asyncio.set_event_loop(None)
                stopped = RuntimeError("the asyncio loop stopped before this call ran")
                for call in list(self.pending):
                    call.answer(outcome.Error(stopped))
                self.to_trio(self._stopped.set, ())

    async def _serve(self) -> None:
        await self._close_requested
        await _cancel_every_task(self.loop)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _without_cancelled(exc: BaseException) -> outcome.Outcome[Any] | _Cancelled:
    """A trio task's failure as its asyncio caller gets it: never a trio ``Cancelled``."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return _CANCELLED if rest is None else outcome.Error(rest)
    return outcome.Error(exc)


async def _cancel_every_task(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on its way out, for tasks started while cleaning up too."""
    me = asyncio.current_task()
    for _ in range(10):
        tasks = [task for task in asyncio.all_tasks(loop) if task is not me]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "an asyncio task failed while the loop was closing",
                        "exception": task.exception(),
                        "task": task,
                    }
                )


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind``, made directly: not through asyncio's policy, which
    trio-asyncio replaces with one that refuses inside trio once it is imported."""
    if kind == "uvloop":
        import uvloop

        return uvloop.Loop()
    if sys.platform == "win32":
        return asyncio.ProactorEventLoop()
    return asyncio.SelectorEventLoop()


@asynccontextmanager
async def open_native_loop(kind: str, report: LeakReport | None) -> AsyncIterator[NativeSeam]:
    seam = NativeSeam(new_loop(kind), report)
    seam.start()
    try:
        yield seam
    finally:
        await seam.close()
