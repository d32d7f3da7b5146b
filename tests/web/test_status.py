"""``/status`` shows no id that acts as a bearer token: not in alerts, not in failures."""

from __future__ import annotations

import uuid

import httpx
import trio
import trio.testing

from runtime.alerts import Alert, Severity
from runtime.app._runtime import RecentAlerts
from runtime.metrics import Metrics
from runtime.supervision import ActorContext, ActorSpec, ActorState, Restart, Supervisor
from runtime.web import mask_ids, operator_app

INTENT = str(uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7"))
STARS_CHARGE = "stxN4TcRnqkX0cL8vXc5FZkT6nYdM2gqJ9bV"
CARD_CHARGE = "pay_2f8Kx91LmQw7ZpR4"


def test_ids_are_masked_and_words_are_not() -> None:
    text = f"intent {INTENT.upper()} charge {STARS_CHARGE}, provider {CARD_CHARGE}: mismatch"
    assert mask_ids(text) == "intent <id> charge <id>, provider <id>: mismatch"
    plain = "ConnectionDoesNotExistError: connection was closed in the middle of operation"
    assert mask_ids(plain) == plain
    assert mask_ids("actor_failed:auto_renewal:infra_error, retry in 300s") == (
        "actor_failed:auto_renewal:infra_error, retry in 300s"
    )


async def test_status_shows_alerts_and_failures_without_their_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def leaky(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        raise RuntimeError(f"intent {INTENT} has charge {STARS_CHARGE}")

    async def degraded(ctx: ActorContext, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        ctx.set_degraded(f"provider says {CARD_CHARGE} is unknown")
        await ctx.stop_requested.wait()

    supervisor = Supervisor(
        [
            ActorSpec("leaky", leaky, restart=Restart.TEMPORARY, critical=False),
            ActorSpec("degraded", degraded),
        ]
    )
    recent = RecentAlerts()
    await recent.send(
        Alert(
            severity=Severity.CRITICAL,
            key=f"payment_mismatch:stars:{STARS_CHARGE}",
            component="billing",
            title=f"payment mismatch for {INTENT}",
            text=f"stars charge {STARS_CHARGE} for intent {INTENT}: amount. Nothing credited.",
        )
    )
    app = operator_app(supervisor, Metrics(), extras=lambda: {"recent_alerts": recent.to_json()})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await trio.sleep(5)
        leaky_status = next(s for s in supervisor.statuses if s.name == "leaky")
        assert leaky_status.state is ActorState.STOPPED and leaky_status.last_failure
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://vpnbot") as client:
            answer = await client.get("/status")
        supervisor.request_shutdown()
    text = answer.text
    for secret in (INTENT, STARS_CHARGE, CARD_CHARGE):
        assert secret not in text
    document = answer.json()
    (alert,) = document["recent_alerts"]
    assert (alert["severity"], alert["kind"], alert["component"]) == (
        "critical",
        "payment_mismatch",
        "billing",
    )
    assert alert["title"] == "payment mismatch for <id>"
    assert "key" not in alert and "text" not in alert
    actors = {a["name"]: a for a in document["actors"]}
    assert actors["leaky"]["last_failure"]["message"] == "intent <id> has charge <id>"
    assert actors["degraded"]["degraded"] == "provider says <id> is unknown"
