"""``Supervisor.replace``: a planned restart (a reload) is not a failure."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing

from runtime.supervision import (
    ActorContext,
    ActorSpec,
    ActorState,
    ActorStatus,
    Budget,
    SdNotifier,
    Supervisor,
    SupervisorObserver,
)


class Events(SupervisorObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.backing_off = trio.Event()
        self.started = trio.Event()

    def actor_started(self, status: ActorStatus) -> None:
        self.events.append(("started", status.name))
        self.started.set()

    def actor_restarting(self, status: ActorStatus, delay: float) -> None:
        self.backing_off.set()

    def actor_failed(self, status: ActorStatus, error: BaseException) -> None:
        self.events.append(("failed", status.name))

    def actor_replaced(self, status: ActorStatus) -> None:
        self.events.append(("replaced", status.name))

    def actor_stop_timed_out(self, status: ActorStatus) -> None:
        self.events.append(("timed_out", status.name))


def tagged(tag: str, log: list[str]) -> Any:
    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        log.append(f"start {ctx.name} {tag}")
        task_status.started()
        await ctx.stop_requested.wait()
        log.append(f"stop {ctx.name} {tag}")

    return run


def deaf(log: list[str]) -> Any:
    """An actor that never looks at its stop request."""

    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        log.append(f"start {ctx.name} deaf")
        task_status.started()
        await trio.sleep_forever()

    return run


async def test_replace_stops_newest_first_then_starts_in_order_from_the_new_specs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    events = Events()
    supervisor = Supervisor(
        [ActorSpec(name, tagged("old", log)) for name in ("a", "b", "c")], observer=events
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.ready.wait()
        log.clear()
        restarted = await supervisor.replace(
            [ActorSpec(name, tagged("new", log), budget=Budget(max_failures=9)) for name in "ab"]
        )
        assert restarted == ["a", "b"]
        assert log == ["stop b old", "stop a old", "start a new", "start b new"]
        for name in "ab":
            status = supervisor.status_of(name)
            assert status.state is ActorState.RUNNING
            assert (status.restarts, status.failures) == (0, 0)
        assert supervisor.status_of("c").state is ActorState.RUNNING
        assert [spec.budget.max_failures for spec in supervisor.specs] == [9, 9, 5]
        assert ("failed", "a") not in events.events
        assert events.events.count(("replaced", "a")) == 1
        supervisor.request_shutdown()
    assert log[-3:] == ["stop c old", "stop b new", "stop a new"]


async def test_an_actor_deaf_to_the_stop_is_cancelled_after_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    events = Events()
    supervisor = Supervisor([ActorSpec("d", deaf(log), shutdown_timeout=3)], observer=events)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.ready.wait()
        before = trio.current_time()
        assert await supervisor.replace([ActorSpec("d", tagged("new", log))]) == ["d"]
        assert trio.current_time() - before >= 3
        assert log == ["start d deaf", "start d new"]
        assert ("timed_out", "d") in events.events and ("failed", "d") not in events.events
        assert supervisor.status_of("d").failures == 0
        supervisor.request_shutdown()


async def test_an_actor_backing_off_takes_the_new_spec_at_its_next_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    crashes = 0

    async def crash(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("down")

    events = Events()
    supervisor = Supervisor([ActorSpec("x", crash, critical=False)], observer=events)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await events.backing_off.wait()
        assert supervisor.status_of("x").state is ActorState.BACKING_OFF
        assert await supervisor.replace([ActorSpec("x", tagged("new", log))]) == []
        with trio.fail_after(120):
            await events.started.wait()
        assert log == ["start x new"]
        assert crashes == 1
        supervisor.request_shutdown()


async def test_a_shutdown_during_a_replace_starts_nothing_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    supervisor = Supervisor([ActorSpec("d", deaf(log), shutdown_timeout=10)])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.ready.wait()

        async def stop_soon() -> None:
            await trio.sleep(1)
            supervisor.request_shutdown()

        nursery.start_soon(stop_soon)
        assert await supervisor.replace([ActorSpec("d", tagged("new", log))]) == []
    assert log == ["start d deaf"]


def test_reloading_speaks_what_notify_reload_needs(tmp_path: Any) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = SdNotifier({"NOTIFY_SOCKET": path})
        assert notifier.reloading("reloading")
        lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    assert lines[2] == "STATUS=reloading"
