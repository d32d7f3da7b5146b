"""An update whose handler killed the process every time is given up by the claim, and
admins hear of it like any other update given up (kept, replayable)."""

from __future__ import annotations

from typing import Any, cast

import trio

from runtime.alerts import Alert
from runtime.bot._inbox import InboxProcessor
from runtime.storage import Connection, Database, inbox
from runtime.supervision import ActorContext

from .test_inbox_storage import update


class Context:
    def __init__(self) -> None:
        self.stop_requested = trio.Event()

    def set_degraded(self, reason: str | None, *, cause: str | None = None) -> None:
        pass

    def record_success(self) -> None:
        pass

    def record_failure(self, exc: BaseException) -> None:
        raise AssertionError(f"no failure expected: {exc!r}")


class Alerts:
    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.sent.append(alert)


async def test_an_update_that_killed_every_process_is_given_up_and_alerted(
    db: Database,
) -> None:
    await inbox.store(db, [update(41)])

    async def died_four_times_and_once_more(conn: Connection) -> None:
        await conn.execute(
            "update telegram_updates set lost_claims = 4, attempts = 1,"
            " claimed_by = 'dead-instance:bot:0', claim_expires_at = now() - interval '1 s'"
            " where update_id = 41"
        )

    await db.transaction(died_four_times_and_once_more)
    alerts = Alerts()

    async def never(*_: Any) -> Any:
        raise AssertionError("a poison update must not be handled again")

    processor = InboxProcessor(lambda: db, owner="alive:bot:1", alerts=lambda: alerts)
    ctx = Context()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor.run, cast(ActorContext, ctx), never)
        with trio.fail_after(30):
            while not alerts.sent:  # noqa: ASYNC110 - the processor runs beside us
                await trio.sleep(0.05)
        ctx.stop_requested.set()
        processor.wakeup.set()
    [alert] = alerts.sent
    assert alert.key == "bot_update_given_up:message"
    assert "replay" in alert.text
    [dead] = await inbox.dead_updates(db)
    assert dead.update_id == 41
    assert await inbox.replay(db, [41]) == [41]
