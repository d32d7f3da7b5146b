"""The supervisor: starts actors in order, restarts them by policy, stops them in reverse."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import trio

from ._backoff import BackoffCounter, FailureBudget
from ._context import ActorContext
from ._observer import SupervisorObserver
from ._sdnotify import SdNotifier
from ._spec import ActorSpec, OnExhausted, Restart
from ._status import ActorState, ActorStatus, FailureRecord, SystemState, system_state
from ._wakeup import wait_any

EX_OK = 0
EX_TEMPFAIL = 75
"""Exit code after an escalation: systemd's Restart=on-failure starts the service again."""

Boundary = Callable[[str], AbstractContextManager[Any]]


def _no_boundary(_name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _default_describe(error: BaseException) -> str:
    return type(error).__name__


def _no_dependency(error: BaseException) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class _Report:
    """One reason an actor is degraded, the dependency it blames, and when (trio time)."""

    reason: str
    cause: str | None
    at: float


def unwrap_group(error: BaseException) -> BaseException:
    """The single error inside nested one-member exception groups (trio's strict groups)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class _Started:
    """Stands in for a ``TaskStatus`` while a planned restart waits for the new start."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: None = None) -> None:
        self.event.set()


class _Child:
    """Runs one actor for the whole life of the supervisor: attempts, backoff, parking."""

    def __init__(self, supervisor: Supervisor, spec: ActorSpec, rng: random.Random) -> None:
        self.sup = supervisor
        self.spec = spec
        self._rng = rng
        self.status = ActorStatus(spec.name, spec.critical, spec.restart.value)
        self.backoff = BackoffCounter(spec.backoff, rng)
        self.budget = FailureBudget(spec.budget)
        self.ctx: ActorContext | None = None
        self.scope = trio.CancelScope()
        self.attempt_scope: trio.CancelScope | None = None
        self.stop_requested = False
        self.wakeup = trio.Event()
        self.done = trio.Event()
        self.launched = False
        self.exhausted_by: BaseException | None = None
        self._starter: trio.TaskStatus[None] | _Started | None = None
        self._returned = False
        self._said: _Report | None = None
        """What the actor reported itself (``set_degraded``)."""
        self._failed: _Report | None = None
        """Its last failed unit of work; shown over what it said until it passes."""
        self._unit_started: float | None = None
        self._gate: trio.Event | None = None
        """Set while a planned restart holds the actor between its two attempts."""
        self._held = trio.Event()

    # -- the runner task -------------------------------------------------------------

    async def supervise(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._starter = task_status
        try:
            with self.scope:
                await self._loop()
        finally:
            self._release_starter()
            self.status.next_restart_at = None
            self._set_state(ActorState.STOPPED)
            self.done.set()

    async def _loop(self) -> None:
        while not self._stopping():
            error, ran_for = await self._attempt()
            if self._stopping():
                if error is not None:
                    self._record_failure(error)
                    self.sup._emit("actor_failed", self.status, error)
                return
            if self._gate is not None:
                await self._hold(error)
                continue
            self._release_starter()
            if self.exhausted_by is not None:
                if await self._exhausted(self.exhausted_by):
                    continue
                return
            if error is None:
                self.sup._emit("actor_exited", self.status)
                if self.spec.restart is not Restart.PERMANENT:
                    self.status.finished_normally = True
                    return
            else:
                self._record_failure(error)
                self.sup._emit("actor_failed", self.status, error)
                if self.spec.restart is Restart.TEMPORARY:
                    return
            self.backoff.note_run(ran_for)
            if self.budget.spend(trio.current_time()):
                if await self._exhausted(error):
                    continue
                return
            await self._back_off()

    async def _attempt(self) -> tuple[BaseException | None, float]:
        """One start of the actor; returns its error (None for a normal exit) and run time."""
        self.ctx = ActorContext(self.spec, self.sup, self._unit_boundary)
        self.exhausted_by = None
        self._returned = False
        self._set_state(ActorState.STARTING)
        started_at: float | None = None
        error: BaseException | None = None
        self.attempt_scope = trio.CancelScope()
        with self.attempt_scope:
            try:
                with self.sup._boundary(self.spec.name):
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._call, self.ctx)
                        started_at = trio.current_time()
                        self._on_started()
            except Exception as exc:
                error = unwrap_group(exc)
                if self._returned and started_at is None and isinstance(error, RuntimeError):
                    error = None  # returned before reporting ready: a finished one-shot actor
        ran_for = 0.0 if started_at is None else trio.current_time() - started_at
        return error, ran_for

    async def _call(self, ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await self.spec.run(ctx, task_status=task_status)
        self._returned = True

    async def _back_off(self) -> None:
        delay = self.backoff.next_delay()
        self.status.next_restart_at = time.time() + delay
        self._set_state(ActorState.BACKING_OFF)
        self.sup._emit("actor_restarting", self.status, delay)
        await self._sleep(delay)
        self.status.next_restart_at = None
        if not self._stopping():
            self.status.restarts += 1

    async def _exhausted(self, error: BaseException | None) -> bool:
        """Apply the budget's action; True when the actor should be started again."""
        policy = self.spec.budget
        if policy.on_exhausted is OnExhausted.ESCALATE:
            self.sup._emit("escalating", self.status, error)
            self.sup.request_shutdown(EX_TEMPFAIL)
            return False
        self._set_state(ActorState.PARKED)
        self.sup._emit("actor_parked", self.status, error)
        if policy.park_cooldown is None:
            await self.wakeup.wait()
            return False
        self.status.next_restart_at = time.time() + policy.park_cooldown
        await self._sleep(policy.park_cooldown)
        self.status.next_restart_at = None
        if self._stopping():
            return False
        self.budget.reset()
        self.backoff.reset()
        self.status.restarts += 1
        self.sup._emit("actor_unparked", self.status)
        return True

    def _stopping(self) -> bool:
        return self.stop_requested

    # -- planned restarts ------------------------------------------------------------

    async def pause(self) -> bool:
        """Stop the running attempt as a shutdown would, and hold the actor before its next
        start (``resume``). False when there is no attempt to stop (backing off, parked,
        finished, not launched): the actor takes a new spec at its next start anyway."""
        if (
            not self.launched
            or self.done.is_set()
            or self.stop_requested
            or self.status.state not in (ActorState.RUNNING, ActorState.STARTING)
        ):
            return False
        self._gate, self._held = trio.Event(), trio.Event()
        self._set_state(ActorState.STOPPING)
        if self.ctx is not None:
            self.ctx.stop_requested.set()
        with trio.move_on_after(self.spec.shutdown_timeout):
            await wait_any(self._held, self.done)
        if not (self._held.is_set() or self.done.is_set()):
            self.sup._emit("actor_stop_timed_out", self.status)
            if self.attempt_scope is not None:
                self.attempt_scope.cancel()
            await wait_any(self._held, self.done)
        return self._held.is_set()

    def adopt(self, spec: ActorSpec) -> None:
        """Run ``spec`` from the next start on; a changed policy starts its counts afresh."""
        if spec.backoff != self.spec.backoff:
            self.backoff = BackoffCounter(spec.backoff, self._rng)
        if spec.budget != self.spec.budget:
            self.budget = FailureBudget(spec.budget)
        self.spec = spec
        self.status.critical = spec.critical
        self.status.restart = spec.restart.value

    async def resume(self) -> None:
        """Start the held actor again; returns once it is ready or its start failed."""
        gate = self._gate
        if gate is None:
            return
        started = _Started()
        self._starter = started
        gate.set()
        await wait_any(started.event, self.done)

    async def _hold(self, error: BaseException | None) -> None:
        """Between the two attempts of a planned restart: not a failure, no budget spent."""
        if error is not None:
            self._record_failure(error)
            self.sup._emit("actor_failed", self.status, error)
        self._set_state(ActorState.STOPPED)
        self._held.set()
        gate = self._gate
        if gate is not None:
            await gate.wait()
        self._gate = None
        if not self._stopping():
            self.sup._emit("actor_replaced", self.status)

    async def _sleep(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.wakeup.wait()

    # -- bookkeeping -----------------------------------------------------------------

    def _on_started(self) -> None:
        self.status.started_at = time.time()
        self._set_state(ActorState.RUNNING)
        self._release_starter()
        self.sup._emit("actor_started", self.status)

    def _release_starter(self) -> None:
        if self._starter is not None:
            starter, self._starter = self._starter, None
            starter.started()

    def _record_failure(self, error: BaseException) -> None:
        self.status.failures += 1
        self.status.last_failure = FailureRecord(
            type=self.sup._describe(error),
            message=str(error) or type(error).__name__,
            time=time.time(),
        )

    def _set_state(self, state: ActorState) -> None:
        if self.status.state is not state:
            self.status.state = state
            self.sup._state_changed()

    def _unit_boundary(self, name: str) -> AbstractContextManager[Any]:
        self._unit_started = trio.current_time()
        return self.sup._boundary(name)

    def iteration_failed(self, error: BaseException) -> None:
        self._record_failure(error)
        last = self.status.last_failure
        message = last.message if last else type(error).__name__
        named: str | None = None
        with contextlib.suppress(Exception):  # reporting a failure must not fail
            named = self.sup._dependency_of(error)
        self._failed = _Report(message, self._cause(named), self._now())
        self._show()
        self.sup._emit("iteration_failed", self.status, error)
        if self.budget.spend(trio.current_time()) and self.exhausted_by is None:
            self.exhausted_by = error
            if self.attempt_scope is not None:
                self.attempt_scope.cancel()
        self.sup._state_changed()

    def iteration_succeeded(self) -> None:
        self.budget.reset()
        self._said = self._failed = None
        self._show()
        self._probe_answered()

    def set_degraded(self, reason: str | None, cause: str | None) -> None:
        """The actor's own word replaces whatever was shown, a failed unit's included."""
        self._failed = None
        self._said = None if reason is None else _Report(reason, self._cause(cause), self._now())
        self._show()
        if reason is None:
            self._probe_answered()

    def forget(self, dependency: str, *, before: float) -> bool:
        """Drop what blames ``dependency`` and was reported before ``before``; True if any."""
        forgotten = False
        if self._failed and self._failed.cause == dependency and self._failed.at < before:
            self._failed, forgotten = None, True
        if self._said and self._said.cause == dependency and self._said.at < before:
            self._said, forgotten = None, True
        if forgotten:
            self._show()
        return forgotten

    def _cause(self, named: str | None) -> str | None:
        """A probe's degradation is its dependency's, whatever the error named."""
        return self.spec.probes or named

    def _probe_answered(self) -> None:
        if self.spec.probes is None:
            return
        started = self._unit_started if self._unit_started is not None else self._now()
        self.sup._dependency_answered(self, self.spec.probes, started)

    @staticmethod
    def _now() -> float:
        return trio.current_time()

    def _show(self) -> None:
        shown = self._failed or self._said
        reason = shown.reason if shown else None
        cause = shown.cause if shown else None
        status = self.status
        if (status.degraded_reason, status.degraded_cause) == (reason, cause):
            return
        if reason is None:
            status.degraded_since = None
        elif status.degraded_since is None:
            status.degraded_since = time.time()
        status.degraded_reason = reason
        status.degraded_cause = cause
        self.sup._state_changed()

    # -- stopping --------------------------------------------------------------------

    async def stop(self) -> None:
        """Ask the actor to stop, wait its shutdown timeout, then cancel it."""
        self.stop_requested = True
        self.wakeup.set()
        if self._gate is not None:
            self._gate.set()
        if not self.launched:
            return
        if self.status.state in (ActorState.RUNNING, ActorState.STARTING):
            self._set_state(ActorState.STOPPING)
        if self.ctx is not None:
            self.ctx.stop_requested.set()
        with trio.move_on_after(self.spec.shutdown_timeout):
            await self.done.wait()
        if not self.done.is_set():
            self.sup._emit("actor_stop_timed_out", self.status)
            self.scope.cancel()
            await self.done.wait()


class Supervisor:
    """A one-for-one supervisor with backoff, failure budgets and a graceful stop.

    Children start in list order, each waited for until it is ready (or its first attempt
    failed), and stop in reverse order. ``run`` returns the process exit code: 0 after a
    requested shutdown, 75 after an escalation.

    Degradation: a failed unit of work marks its actor degraded with the error's message
    and the dependency ``dependency_of(error)`` names (its cause), until a unit succeeds or
    the actor says otherwise. A probe (``ActorSpec.probes``) is degraded under the
    dependency it watches; each of its units that succeeds clears, on every other actor,
    what blames that dependency and was reported before the unit began. So an actor that
    sleeps long after a failure stops being reported degraded as soon as its dependency
    is seen back, without waiting for its own next unit. Causes are opaque names here.
    """

    def __init__(
        self,
        specs: Sequence[ActorSpec],
        *,
        observer: SupervisorObserver | None = None,
        describe_failure: Callable[[BaseException], str] = _default_describe,
        dependency_of: Callable[[BaseException], str | None] = _no_dependency,
        notifier: SdNotifier | None = None,
        rng: random.Random | None = None,
        boundary: Boundary = _no_boundary,
        heartbeat_interval: float = 1.0,
    ) -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"actor names must be unique: {', '.join(duplicates)}")
        generator = rng or random.Random()
        self._children = [_Child(self, spec, generator) for spec in specs]
        self._by_name = {child.spec.name: child for child in self._children}
        self._observer = observer or SupervisorObserver()
        self._describe = describe_failure
        self._dependency_of = dependency_of
        self._notifier = notifier or SdNotifier({})
        self._boundary = boundary
        self._heartbeat_interval = heartbeat_interval
        self._shutdown = trio.Event()
        self._exit_code = EX_OK
        self._stopping = False
        self._system_state = SystemState.UNAVAILABLE
        self.ready = trio.Event()
        self.stopped = trio.Event()
        self.last_heartbeat: float | None = None

    # -- what others read ------------------------------------------------------------

    @property
    def specs(self) -> list[ActorSpec]:
        """The actors in start order, with the policies they run under."""
        return [child.spec for child in self._children]

    @property
    def statuses(self) -> list[ActorStatus]:
        return [child.status for child in self._children]

    def status_of(self, name: str) -> ActorStatus:
        return self._by_name[name].status

    @property
    def system_state(self) -> SystemState:
        return self._system_state

    @property
    def heartbeat_interval(self) -> float:
        return self._heartbeat_interval

    def alive(self, now: float) -> bool:
        """The supervising loop has beaten recently."""
        if self.last_heartbeat is None:
            return False
        return now - self.last_heartbeat <= 3 * self._heartbeat_interval

    # -- control ---------------------------------------------------------------------

    async def replace(self, specs: Sequence[ActorSpec]) -> list[str]:
        """Run ``specs`` in place of the actors of the same names: a planned restart, as a
        new configuration needs. Returns the names of the actors restarted.

        The running ones are asked to stop as at a shutdown (in reverse start order, each
        within its shutdown timeout), then started again from their new specs in start
        order, each waited for like at the start. It is not a failure: no budget is spent,
        no backoff is waited, no restart is counted. An actor that is not running (backing
        off, parked, finished) takes its new spec at its next start. A shutdown requested
        meanwhile wins: the actors held are not started again.
        """
        wanted = {spec.name: spec for spec in specs}
        unknown = sorted(set(wanted) - set(self._by_name))
        if unknown:
            raise ValueError(f"no actor has these names: {', '.join(unknown)}")
        children = [child for child in self._children if child.spec.name in wanted]
        held = []
        for child in reversed(children):
            if self._shutdown.is_set():
                break
            if await child.pause():
                held.append(child)
        restarted = []
        for child in children:
            child.adopt(wanted[child.spec.name])
            if child in held and not self._shutdown.is_set():
                await child.resume()
                restarted.append(child.spec.name)
        return restarted

    def request_shutdown(self, exit_code: int = EX_OK) -> None:
        if exit_code != EX_OK:
            self._exit_code = exit_code
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                start_scope = trio.CancelScope()
                nursery.start_soon(self._start_all, nursery, start_scope)
                task_status.started()
                await self._shutdown.wait()
                start_scope.cancel()
                self._stopping = True
                self._notifier.stopping()
                self._state_changed()
                for child in reversed(self._children):
                    await child.stop()
                nursery.cancel_scope.cancel()
        finally:
            self.stopped.set()
        return self._exit_code

    async def _start_all(self, nursery: trio.Nursery, scope: trio.CancelScope) -> None:
        with scope:
            for child in self._children:
                if self._shutdown.is_set():
                    return
                child.launched = True
                await nursery.start(child.supervise)

    async def _heartbeat(self) -> None:
        interval = self._heartbeat_interval
        watchdog = self._notifier.watchdog_interval
        if watchdog is not None:
            interval = min(interval, watchdog)
        while True:
            self.last_heartbeat = trio.current_time()
            if watchdog is not None:
                self._notifier.watchdog()
            if not self._stopping:
                self._emit("tick", self.statuses, self._system_state)
            await trio.sleep(interval)

    # -- called by actor contexts ----------------------------------------------------

    def iteration_failed(self, name: str, exc: BaseException) -> None:
        self._by_name[name].iteration_failed(exc)

    def iteration_succeeded(self, name: str) -> None:
        self._by_name[name].iteration_succeeded()

    def set_degraded(self, name: str, reason: str | None, cause: str | None = None) -> None:
        self._by_name[name].set_degraded(reason, cause)

    def _dependency_answered(self, probe: _Child, dependency: str, started: float) -> None:
        cleared = [
            child.status
            for child in self._children
            if child is not probe and child.forget(dependency, before=started)
        ]
        if cleared:
            self._emit("dependency_answered", dependency, cleared)

    # -- internals -------------------------------------------------------------------

    def _emit(self, event: str, *args: Any) -> None:
        try:
            getattr(self._observer, event)(*args)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._observer.observer_failed(exc)

    def _state_changed(self) -> None:
        new = system_state(self.statuses, stopping=self._stopping)
        if not self.ready.is_set() and not self._stopping and self._critical_up():
            self.ready.set()
            self._notifier.ready(new.value)
        if new is not self._system_state:
            old, self._system_state = self._system_state, new
            if self.ready.is_set() or self._stopping:
                self._notifier.status(new.value)
            self._emit("system_state_changed", old, new)

    def _critical_up(self) -> bool:
        return all(
            child.status.up or child.status.finished_normally
            for child in self._children
            if child.spec.critical
        )
