"""The supervision core under trio's MockClock: every sleep is instant and deterministic."""

from __future__ import annotations

import random
import socket
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing

from runtime.supervision import (
    EX_TEMPFAIL,
    ActorContext,
    ActorSpec,
    ActorState,
    ActorStatus,
    Backoff,
    BackoffCounter,
    Budget,
    FailureBudget,
    OnExhausted,
    Restart,
    SdNotifier,
    Supervisor,
    SupervisorObserver,
    SystemState,
    backoff_delay,
    loop_worker,
    system_state,
)

NO_JITTER = Backoff(min=1, max=10, multiplier=2, jitter=0, reset_after=30)


class Recorder(SupervisorObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.delays: list[float] = []

    def _add(self, event: str, status: ActorStatus) -> None:
        self.events.append((event, status.name))

    def actor_started(self, status: ActorStatus) -> None:
        self._add("started", status)

    def actor_failed(self, status: ActorStatus, error: BaseException) -> None:
        self._add("failed", status)

    def iteration_failed(self, status: ActorStatus, error: BaseException) -> None:
        self._add("iteration_failed", status)

    def actor_exited(self, status: ActorStatus) -> None:
        self._add("exited", status)

    def actor_restarting(self, status: ActorStatus, delay: float) -> None:
        self._add("restarting", status)
        self.delays.append(delay)

    def actor_parked(self, status: ActorStatus, error: BaseException | None) -> None:
        self._add("parked", status)

    def actor_unparked(self, status: ActorStatus) -> None:
        self._add("unparked", status)

    def escalating(self, status: ActorStatus, error: BaseException | None) -> None:
        self._add("escalating", status)

    def actor_stop_timed_out(self, status: ActorStatus) -> None:
        self._add("stop_timed_out", status)

    def count(self, event: str, name: str) -> int:
        return self.events.count((event, name))


def crashing(starts: list[float], *, after: float = 0.0) -> Any:
    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(after)
        raise RuntimeError("boom")

    return run


def steady(log: list[str] | None = None) -> Any:
    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        if log is not None:
            log.append(f"start {ctx.name}")
        task_status.started()
        await ctx.stop_requested.wait()
        if log is not None:
            log.append(f"stop {ctx.name}")

    return run


async def run_for(supervisor: Supervisor, seconds: float) -> int:
    """Run the supervisor for ``seconds`` of (mock) time, then ask it to shut down."""
    async with trio.open_nursery() as nursery:
        result: list[int] = []

        async def main() -> None:
            result.append(await supervisor.run())

        nursery.start_soon(main)
        with trio.move_on_after(seconds):
            await supervisor.stopped.wait()
        supervisor.request_shutdown()
    return result[0]


# -- backoff and budget arithmetic -------------------------------------------------------


def test_backoff_sequence_grows_by_multiplier_and_stops_at_the_cap() -> None:
    delays = [backoff_delay(NO_JITTER, n, 0.0) for n in range(7)]
    assert delays == [1, 2, 4, 8, 10, 10, 10]


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_delay(NO_JITTER, 10_000, 0.0) == 10


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
@pytest.mark.parametrize("attempt", [0, 2, 5])
def test_jitter_stays_within_bounds_and_below_the_cap(draw: float, attempt: int) -> None:
    policy = Backoff(min=1, max=10, multiplier=2, jitter=0.3)
    capped = min(10.0, 2.0**attempt)
    delay = backoff_delay(policy, attempt, draw)
    assert capped * 0.7 <= delay <= capped
    assert delay <= policy.max


def test_jitter_spreads_delays() -> None:
    counter = BackoffCounter(Backoff(min=8, max=8, jitter=0.5), random.Random(7))
    delays = {round(counter.next_delay(), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(4 <= d <= 8 for d in delays)


def test_backoff_count_resets_only_after_a_healthy_period() -> None:
    counter = BackoffCounter(NO_JITTER, random.Random(0))
    assert [counter.next_delay() for _ in range(3)] == [1, 2, 4]
    counter.note_run(29.9)
    assert counter.next_delay() == 8
    counter.note_run(30)
    assert counter.next_delay() == 1


def test_budget_allows_max_failures_within_the_window() -> None:
    budget = FailureBudget(Budget(max_failures=3, window=10))
    assert [budget.spend(t) for t in (0, 1, 2)] == [False, False, False]
    assert budget.spend(3) is True
    fresh = FailureBudget(Budget(max_failures=3, window=10))
    assert [fresh.spend(t) for t in (0, 5, 11, 16, 22)] == [False] * 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min": 5, "max": 1},
        {"min": -1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_impossible_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# -- restarts ------------------------------------------------------------------------------


async def test_crashing_actor_restarts_with_exponential_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    recorder = Recorder()
    spec = ActorSpec(
        "crashy", crashing(starts), backoff=NO_JITTER, budget=Budget(max_failures=100, window=1000)
    )
    supervisor = Supervisor([spec], observer=recorder)
    await run_for(supervisor, 40)
    gaps = [round(b - a, 6) for a, b in pairwise(starts)]
    assert gaps[:6] == [1, 2, 4, 8, 10, 10]
    assert recorder.delays[:6] == [1, 2, 4, 8, 10, 10]
    assert supervisor.status_of("crashy").restarts == len(starts) - 1


async def test_a_healthy_run_resets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    lifetimes = iter([0, 0, 0, 31, 0])

    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(next(lifetimes, 0))
        raise RuntimeError("boom")

    spec = ActorSpec("a", run, backoff=NO_JITTER, budget=Budget(max_failures=100, window=1000))
    supervisor = Supervisor([spec], observer=Recorder())
    await run_for(supervisor, 45)
    gaps = [round(b - a, 6) for a, b in pairwise(starts)]
    # three quick crashes: 1, 2, 4; then a 31 s healthy run resets: 31 + 1
    assert gaps[:4] == [1, 2, 4, 32]


async def test_budget_exhaustion_parks_the_actor_and_spares_its_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    ticks: list[float] = []
    recorder = Recorder()

    async def ticker(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(1)

    crashy = ActorSpec(
        "crashy",
        crashing(starts),
        backoff=NO_JITTER,
        budget=Budget(max_failures=3, window=100),
        critical=False,
    )
    supervisor = Supervisor([ActorSpec("ticker", ticker), crashy], observer=recorder)
    await run_for(supervisor, 60)
    assert len(starts) == 4
    assert recorder.count("parked", "crashy") == 1
    assert supervisor.status_of("ticker").restarts == 0
    assert ticks[-1] >= 59
    assert supervisor.status_of("ticker").state is ActorState.STOPPED
    assert supervisor.status_of("crashy").failures == 4


async def test_parked_actor_state_and_system_state(autojump_clock: trio.testing.MockClock) -> None:
    crashy = ActorSpec(
        "crashy", crashing([]), backoff=NO_JITTER, budget=Budget(max_failures=1), critical=False
    )
    supervisor = Supervisor([ActorSpec("steady", steady()), crashy])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(10)
        assert supervisor.status_of("crashy").state is ActorState.PARKED
        assert supervisor.system_state is SystemState.DEGRADED
        supervisor.request_shutdown()


async def test_parked_actor_is_retried_after_its_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    recorder = Recorder()
    budget = Budget(max_failures=1, window=100, park_cooldown=300)
    supervisor = Supervisor(
        [ActorSpec("crashy", crashing(starts), backoff=NO_JITTER, budget=budget)],
        observer=recorder,
    )
    await run_for(supervisor, 350)
    # two quick failures park it (t=0, t=1); after 300 s it starts again
    assert [round(s) for s in starts[:3]] == [0, 1, 301]
    assert recorder.count("unparked", "crashy") == 1


async def test_budget_exhaustion_escalates_with_exit_75_and_stops_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    crashy = ActorSpec(
        "crashy",
        crashing([]),
        backoff=NO_JITTER,
        budget=Budget(max_failures=2, window=100, on_exhausted=OnExhausted.ESCALATE),
    )
    supervisor = Supervisor(
        [ActorSpec("one", steady(log)), crashy, ActorSpec("two", steady(log))],
        observer=Recorder(),
    )
    with trio.fail_after(100):
        code = await supervisor.run()
    assert code == EX_TEMPFAIL
    assert log == ["start one", "start two", "stop two", "stop one"]


@pytest.mark.parametrize(
    ("restart", "crash", "expected_starts"),
    [
        (Restart.PERMANENT, False, 3),
        (Restart.PERMANENT, True, 3),
        (Restart.TRANSIENT, False, 1),
        (Restart.TRANSIENT, True, 3),
        (Restart.TEMPORARY, False, 1),
        (Restart.TEMPORARY, True, 1),
    ],
)
async def test_restart_types(
    autojump_clock: trio.testing.MockClock, restart: Restart, crash: bool, expected_starts: int
) -> None:
    starts: list[float] = []

    async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(0.5)
        if crash:
            raise RuntimeError("crash")

    spec = ActorSpec(
        "a",
        run,
        restart=restart,
        backoff=Backoff(min=1, max=1, jitter=0),
        budget=Budget(max_failures=100),
    )
    supervisor = Supervisor([spec])
    await run_for(supervisor, 4.2)
    assert len(starts) == expected_starts
    status = supervisor.status_of("a")
    assert status.failures == (len(starts) if crash else 0)


async def test_a_finished_transient_actor_does_not_make_the_system_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def one_shot(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    supervisor = Supervisor(
        [ActorSpec("once", one_shot, restart=Restart.TRANSIENT), ActorSpec("s", steady())]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(1)
        assert supervisor.status_of("once").state is ActorState.STOPPED
        assert supervisor.system_state is SystemState.HEALTHY
        supervisor.request_shutdown()


async def test_an_actor_that_fails_before_ready_does_not_block_its_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broken(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        raise OSError("no such port")

    log: list[str] = []
    supervisor = Supervisor(
        [ActorSpec("broken", broken, critical=False), ActorSpec("after", steady(log))]
    )
    await run_for(supervisor, 5)
    assert log[0] == "start after"
    status = supervisor.status_of("broken")
    assert status.failures >= 2
    assert status.last_failure is not None and status.last_failure.type == "OSError"


# -- shutdown ------------------------------------------------------------------------------


async def test_actors_stop_in_reverse_start_order(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    names = ["db", "bot", "workers", "http"]
    supervisor = Supervisor([ActorSpec(n, steady(log)) for n in names])
    code = await run_for(supervisor, 1)
    assert code == 0
    assert log == [f"start {n}" for n in names] + [f"stop {n}" for n in reversed(names)]


async def test_actor_ignoring_the_stop_request_is_cancelled_after_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []

    async def stubborn(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    recorder = Recorder()
    spec = ActorSpec("stubborn", stubborn, shutdown_timeout=7)
    supervisor = Supervisor([spec], observer=recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(1)
        asked = trio.current_time()
        supervisor.request_shutdown()
        await supervisor.stopped.wait()
        assert trio.current_time() - asked == pytest.approx(7)
    assert seen == ["cancelled"]
    assert recorder.count("stop_timed_out", "stubborn") == 1


async def test_cooperative_actor_gets_its_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[float] = []

    async def graceful(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await ctx.stop_requested.wait()
        await trio.sleep(2)  # flushing
        finished.append(trio.current_time())

    supervisor = Supervisor([ActorSpec("g", graceful, shutdown_timeout=5)])
    await run_for(supervisor, 1)
    assert finished == [pytest.approx(3)]


async def test_shutdown_interrupts_a_backoff_sleep(autojump_clock: trio.testing.MockClock) -> None:
    spec = ActorSpec("crashy", crashing([]), backoff=Backoff(min=1000, max=1000, jitter=0))
    supervisor = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(5)
        assert supervisor.status_of("crashy").state is ActorState.BACKING_OFF
        assert supervisor.status_of("crashy").next_restart_at is not None
        before = trio.current_time()
        supervisor.request_shutdown()
        await supervisor.stopped.wait()
        assert trio.current_time() == before


# -- loop workers --------------------------------------------------------------------------


async def test_loop_worker_sleeps_at_least_the_minimum_after_a_failed_iteration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    outcomes = iter([None, "fail", "fail", None, None])

    async def iteration(ctx: ActorContext) -> float | None:
        calls.append(trio.current_time())
        if next(outcomes, None) == "fail":
            raise ConnectionError("panel down")
        return None

    recorder = Recorder()
    spec = ActorSpec(
        "worker",
        loop_worker(iteration, interval=2),
        min_sleep_on_failure=15,
        budget=Budget(max_failures=5),
    )
    supervisor = Supervisor([spec], observer=recorder)
    await run_for(supervisor, 40)
    gaps = [round(b - a, 6) for a, b in pairwise(calls)]
    assert gaps[:4] == [2, 15, 15, 2]
    assert recorder.count("iteration_failed", "worker") == 2
    assert supervisor.status_of("worker").restarts == 0


async def test_loop_worker_never_retries_in_a_tight_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    async def iteration(ctx: ActorContext) -> float | None:
        calls.append(trio.current_time())
        raise RuntimeError("always")

    spec = ActorSpec(
        "worker",
        loop_worker(iteration, interval=0),
        min_sleep_on_failure=10,
        budget=Budget(max_failures=1000, window=10_000),
    )
    await run_for(Supervisor([spec]), 100)
    gaps = [b - a for a, b in pairwise(calls)]
    assert gaps and min(gaps) >= 10


async def test_consecutive_iteration_failures_spend_the_budget_and_success_resets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = iter(["fail", "fail", "ok", "fail", "fail", "ok", "fail", "fail", "fail"])

    async def iteration(ctx: ActorContext) -> float | None:
        if next(script, "fail") == "fail":
            raise ConnectionError("down")
        return None

    recorder = Recorder()
    spec = ActorSpec(
        "worker",
        loop_worker(iteration, interval=1),
        min_sleep_on_failure=1,
        budget=Budget(max_failures=2, window=1000),
        critical=False,
    )
    supervisor = Supervisor([spec], observer=recorder)
    await run_for(supervisor, 30)
    # pairs of failures are forgiven by the following success; three in a row park it
    assert recorder.count("iteration_failed", "worker") == 7
    assert recorder.count("parked", "worker") == 1
    assert supervisor.status_of("worker").failures == 7


async def test_failing_iterations_mark_the_actor_degraded_until_a_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = iter(["fail", "ok"])

    async def iteration(ctx: ActorContext) -> float | None:
        if next(script, "ok") == "fail":
            raise ConnectionError("panel down")
        return None

    spec = ActorSpec("worker", loop_worker(iteration, interval=5), min_sleep_on_failure=10)
    supervisor = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(1)
        assert supervisor.status_of("worker").degraded_reason == "panel down"
        assert supervisor.system_state is SystemState.DEGRADED
        await trio.sleep(10)
        assert supervisor.status_of("worker").degraded_reason is None
        assert supervisor.system_state is SystemState.HEALTHY
        supervisor.request_shutdown()


# -- degradation that names a cause ------------------------------------------------------


class Blamed(Exception):
    """A failure that names the shared dependency it comes from."""

    def __init__(self, message: str, dependency: str) -> None:
        super().__init__(message)
        self.dependency = dependency


def blamed(error: BaseException) -> str | None:
    return getattr(error, "dependency", None)


class Dependency:
    """A shared dependency that tests take away and bring back."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True

    def check(self) -> None:
        if not self.up:
            raise Blamed(f"{self.name} is away", self.name)


def probe_of(dependency: Dependency, *, interval: float = 5, took: float = 0) -> ActorSpec:
    async def ping(ctx: ActorContext) -> None:
        await trio.sleep(took)
        if not dependency.up:
            raise ConnectionError("no answer")  # names nothing: the probe's cause is its own

    return ActorSpec(
        f"{dependency.name}_probe",
        loop_worker(ping, interval=interval),
        min_sleep_on_failure=interval,
        probes=dependency.name,
    )


def user_of(name: str, *dependencies: Dependency, runs: list[float] | None = None) -> ActorSpec:
    """A worker that sleeps ten minutes after a failure."""

    async def iteration(ctx: ActorContext) -> None:
        if runs is not None:
            runs.append(trio.current_time())
        for dependency in dependencies:
            dependency.check()

    return ActorSpec(
        name,
        loop_worker(iteration, interval=1),
        min_sleep_on_failure=600,
        budget=Budget(max_failures=100, window=60),
        critical=False,
    )


class Answered(SupervisorObserver):
    def __init__(self) -> None:
        self.answers: list[tuple[str, list[str]]] = []

    def dependency_answered(self, dependency: str, cleared: list[ActorStatus]) -> None:
        self.answers.append((dependency, [status.name for status in cleared]))


async def test_degradation_clears_when_its_cause_answers_not_when_the_actor_wakes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    db, panel = Dependency("db"), Dependency("panel")
    runs: list[float] = []
    observer = Answered()
    supervisor = Supervisor(
        [
            probe_of(db),
            user_of("renewal", db, runs=runs),
            user_of("reminders", db),
            user_of("activation", panel),
        ],
        observer=observer,
        dependency_of=blamed,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(10)
        db.up = panel.up = False
        await trio.sleep(10)
        for name in ("db_probe", "renewal", "reminders"):
            assert supervisor.status_of(name).degraded_cause == "db", name
        assert supervisor.status_of("renewal").degraded_reason == "db is away"
        assert supervisor.status_of("db_probe").degraded_reason == "no answer"
        assert supervisor.status_of("activation").degraded_cause == "panel"
        failed_at = runs[-1]

        db.up = panel.up = True
        await trio.sleep(5.5)  # one probe interval
        for name in ("db_probe", "renewal", "reminders"):
            assert supervisor.status_of(name).degraded_reason is None, name
            assert supervisor.status_of(name).degraded_since is None, name
        assert observer.answers == [("db", ["renewal", "reminders"])]
        # the panel has no probe: its user stays degraded until its own next try
        assert supervisor.status_of("activation").degraded_reason == "panel is away"
        assert supervisor.system_state is SystemState.DEGRADED
        # and the ten-minute sleep after a failure is kept
        assert runs[-1] == failed_at
        await trio.sleep(600)
        assert supervisor.status_of("activation").degraded_reason is None
        assert supervisor.system_state is SystemState.HEALTHY
        supervisor.request_shutdown()


async def test_a_probe_clears_only_what_was_reported_before_it_began(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failure met while a probe's check is under way may be newer news than its answer."""
    db = Dependency("db")

    async def fails_at_one_second(ctx: ActorContext) -> None:
        if trio.current_time() >= 1:
            raise Blamed("lost", "db")

    late = ActorSpec("late", loop_worker(fails_at_one_second, interval=1), min_sleep_on_failure=600)
    supervisor = Supervisor([probe_of(db, interval=10, took=3), late], dependency_of=blamed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(5)  # the probe's check ran from 0 s to 3 s: older than the failure
        assert supervisor.status_of("late").degraded_reason == "lost"
        await trio.sleep(12)  # its next check began at 13 s
        assert supervisor.status_of("late").degraded_reason is None
        supervisor.request_shutdown()


async def test_what_an_actor_says_without_a_cause_is_its_own_to_clear(
    autojump_clock: trio.testing.MockClock,
) -> None:
    db = Dependency("db")

    def says(reason: str, cause: str | None) -> Any:
        async def run(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
            if cause is None:
                ctx.set_degraded(reason)  # the call every existing actor makes
            else:
                ctx.set_degraded(reason, cause=cause)
            task_status.started()
            await ctx.stop_requested.wait()

        return run

    supervisor = Supervisor(
        [
            ActorSpec("own", says("holding work back", None)),
            ActorSpec("waits", says("waiting for the database", "db")),
            probe_of(db),
        ]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(1)
        assert supervisor.status_of("own").degraded_cause is None
        assert supervisor.status_of("own").degraded_reason == "holding work back"
        await trio.sleep(10)
        assert supervisor.status_of("own").degraded_reason == "holding work back"
        assert supervisor.status_of("waits").degraded_reason is None
        supervisor.request_shutdown()


async def test_a_failed_unit_shows_over_what_the_actor_said_and_gives_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker holding work back for a panel meets the database away: once the database
    answers, its own word about the panel is shown again, not a healthy actor."""
    db = Dependency("db")

    async def iteration(ctx: ActorContext) -> None:
        ctx.set_degraded("panel down", cause="panel")
        db.check()

    worker = ActorSpec("worker", loop_worker(iteration, interval=1), min_sleep_on_failure=600)
    supervisor = Supervisor([probe_of(db), worker], dependency_of=blamed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        db.up = False
        await trio.sleep(2)
        status = supervisor.status_of("worker")
        assert (status.degraded_reason, status.degraded_cause) == ("db is away", "db")
        since = status.degraded_since
        db.up = True
        await trio.sleep(6)
        assert (status.degraded_reason, status.degraded_cause) == ("panel down", "panel")
        assert status.degraded_since == since  # still degraded all along
        supervisor.request_shutdown()


def test_a_probe_needs_a_dependency_name() -> None:
    with pytest.raises(ValueError, match="dependency"):
        ActorSpec("probe", steady(), probes="")


# -- state, readiness, observers -----------------------------------------------------------


def _status(state: ActorState, *, critical: bool = True, degraded: bool = False) -> ActorStatus:
    status = ActorStatus("x", critical, "permanent", state=state)
    status.degraded_reason = "slow" if degraded else None
    return status


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([_status(ActorState.RUNNING)], SystemState.HEALTHY),
        ([_status(ActorState.RUNNING), _status(ActorState.RUNNING, degraded=True)], "degraded"),
        ([_status(ActorState.RUNNING), _status(ActorState.PARKED, critical=False)], "degraded"),
        ([_status(ActorState.BACKING_OFF, critical=False)], SystemState.DEGRADED),
        ([_status(ActorState.RUNNING), _status(ActorState.BACKING_OFF)], "unavailable"),
        ([_status(ActorState.PARKED)], SystemState.UNAVAILABLE),
        ([_status(ActorState.STARTING)], SystemState.UNAVAILABLE),
    ],
)
def test_system_state_is_derived_from_actor_states(
    statuses: list[ActorStatus], expected: str
) -> None:
    assert system_state(statuses) == expected


def test_system_is_unavailable_while_stopping() -> None:
    assert system_state([_status(ActorState.RUNNING)], stopping=True) is SystemState.UNAVAILABLE


async def test_ready_waits_for_every_critical_actor(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(10)
        task_status.started()
        await ctx.stop_requested.wait()

    supervisor = Supervisor([ActorSpec("fast", steady()), ActorSpec("slow", slow)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(5)
        assert not supervisor.ready.is_set()
        await trio.sleep(6)
        assert supervisor.ready.is_set()
        supervisor.request_shutdown()


async def test_a_raising_observer_does_not_break_supervision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(SupervisorObserver):
        def actor_started(self, status: ActorStatus) -> None:
            raise ValueError("observer bug")

    log: list[str] = []
    assert await run_for(Supervisor([ActorSpec("a", steady(log))], observer=Broken()), 1) == 0
    assert log == ["start a", "stop a"]


def test_duplicate_actor_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([ActorSpec("a", steady()), ActorSpec("a", steady())])


# -- systemd notify --------------------------------------------------------------------------


def _notify_socket(tmp_path: Any) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def _drain(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_supervisor_speaks_the_notify_protocol(
    autojump_clock: trio.testing.MockClock, tmp_path: Any
) -> None:
    sock, path = _notify_socket(tmp_path)
    with sock:
        notifier = SdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_interval == 2
        supervisor = Supervisor([ActorSpec("a", steady())], notifier=notifier)
        await run_for(supervisor, 5)
        messages = _drain(sock)
    assert "READY=1\nSTATUS=healthy" in messages
    assert messages.count("WATCHDOG=1") >= 3
    assert any(m.startswith("STOPPING=1") for m in messages)
    ready_at = messages.index("READY=1\nSTATUS=healthy")
    stopping_at = next(i for i, m in enumerate(messages) if m.startswith("STOPPING=1"))
    assert ready_at < stopping_at


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    notifier = SdNotifier({})
    assert not notifier.enabled
    assert notifier.ready("healthy") is False
    assert notifier.watchdog_interval is None


def test_watchdog_is_ignored_when_meant_for_another_process() -> None:
    notifier = SdNotifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None


def test_notifier_survives_a_missing_socket(tmp_path: Any) -> None:
    notifier = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert notifier.send("READY=1") is False
    assert notifier.errors == 1
