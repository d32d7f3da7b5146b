"""The bot names the dependency it is degraded by, so one outage is one alert."""

from __future__ import annotations

from typing import cast

from runtime.bot._inbox import report_failure
from runtime.failures import DATABASE, InfraError, classify
from runtime.supervision import ActorContext


class RecordingContext:
    def __init__(self) -> None:
        self.degraded: list[tuple[str | None, str | None]] = []
        self.failures: list[BaseException] = []

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        self.degraded.append((reason, cause))

    def record_failure(self, exc: BaseException) -> None:
        self.failures.append(exc)


def test_a_database_failure_degrades_the_bot_under_the_databases_cause() -> None:
    ctx = RecordingContext()
    error = InfraError("database: connection refused", transient=True, dependency=DATABASE)
    report_failure(cast(ActorContext, ctx), error, classify(error))
    assert [cause for _, cause in ctx.degraded] == [DATABASE]
    assert ctx.failures == []


def test_a_bug_counts_against_the_budget_and_names_no_cause() -> None:
    ctx = RecordingContext()
    error = KeyError("surprise")
    report_failure(cast(ActorContext, ctx), error, classify(error))
    assert ctx.degraded == [] and ctx.failures == [error]
