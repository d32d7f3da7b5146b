"""The notifier against a fake Bot API over real HTTP: rendering, the global rate, per-chat
spacing, 429 pauses, blocked users, retries and dead letters, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from runtime.failures import TELEGRAM, DependencyError
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds, outbox
from runtime.telegram import BotApi, BotTokenRejected
from runtime.workers import NAMES, notifier, worker_actors
from runtime.workers.notifier import Notifier

from .conftest import (
    Alerts,
    IterationContext,
    Recorder,
    add_user,
    fast,
    fetch,
    jobs,
    make_services,
    make_settings,
    supervised,
    wait_until,
)
from .fake_bot_api import TOKEN, FakeBotApi

CTX: Any = IterationContext()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    peer = FakeBotApi()
    async with peer.running():
        yield peer


def make(services: Services, fake: FakeBotApi, owner: str = "sender-a", **options: Any) -> Notifier:
    return Notifier(services, BotApi(TOKEN, api_base=fake.url), owner, **options)


async def notify(db: Database, chat_id: int, template: str, key: str, **params: Any) -> None:
    payload: dict[str, Any] = {"chat_id": chat_id, "template": template, "params": params}
    await outbox.enqueue_job(db, kind=job_kinds.NOTIFY, dedup_key=key, payload=payload)


async def drain(
    sender: Notifier,
    db: Database,
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a test helper's deadline
) -> None:
    """Run iterations until no notification is pending (and due)."""
    with trio.fail_after(timeout):
        while True:
            pause = await sender.iteration(CTX)
            pending = await fetch(db, "select count(*) as n from outbox where status = 'pending'")
            if not pending[0]["n"]:
                return
            await trio.sleep(pause or 0.01)


async def test_messages_are_rendered_in_the_users_language(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    await add_user(db, 1, language="en")
    await add_user(db, 2, language="ru")
    expires = datetime(2031, 5, 6, 7, 8, tzinfo=UTC).isoformat()
    await notify(db, 1, "payment_received", "k1", amount_minor=19900, currency="RUB")
    await notify(db, 2, "topup_credited", "k2", amount_minor=150, currency="XTR", balance_minor=300)
    await notify(db, 2, "trial_ending", "k3", expires_at=expires, offset_hours=6)
    await notify(
        db,
        1,
        "access_ready",
        "k4",
        access_url="https://panel.example/sub/tok3n",
        expires_at=expires,
    )
    await outbox.enqueue_job(
        db,
        kind=job_kinds.NOTIFY,
        dedup_key="broadcast:1:2",
        payload={"chat_id": 2, "template": "broadcast", "params": {"text": "Hello, everyone"}},
    )
    sender = make(services, fake, per_chat_interval=0.05)
    await drain(sender, db)
    await sender.close()
    assert fake.texts(1)[0] == (
        "Payment received: ₽199.00. Your access is being prepared;"
        " the link arrives here in a moment."
    )
    assert fake.texts(2)[:2] == [
        "Баланс пополнен на 150\xa0⭐. Баланс: 300\xa0⭐.",
        "Пробный период закончится 6 мая 2031\u202fг., 07:08 UTC."  # noqa: RUF001
        " Выберите тариф, чтобы VPN продолжил работать.",
    ]
    assert fake.texts(2)[2] == "Hello, everyone"
    photo = [s for s in fake.sent if s.method == "sendPhoto"]
    assert len(photo) == 1 and photo[0].chat_id == 1
    assert photo[0].photo is not None and photo[0].photo.startswith(b"\x89PNG\r\n\x1a\n")
    assert "https://panel.example/sub/tok3n" in (photo[0].text or "")
    assert {j["status"] for j in await jobs(db)} == {"done"}


async def test_the_global_rate_holds_with_no_429(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    fake.max_per_second = 42  # the peer's limit, a little above ours
    count, rate = 60, 40.0
    for chat in range(1000, 1000 + count):
        await notify(db, chat, "payment_received", f"k{chat}", amount_minor=100, currency="RUB")
    sender = make(services, fake, rate_per_second=rate)
    await drain(sender, db)
    await sender.close()
    times = sorted(fake.times())
    assert len(times) == count
    assert not [a for a in fake.attempts if a[3] == 429]
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= rate + 1
    # never faster than the pacer allows (how close it comes is the workers bench's figure)
    assert times[-1] - times[0] >= (count - sender.pacer.capacity) / sender.pacer.refill


async def test_one_chat_gets_a_short_burst_then_a_message_per_interval_in_order(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    for index in range(5):
        await notify(db, 5, "broadcast", f"k{index}", text=f"message {index}")
    await notify(db, 6, "broadcast", "other", text="another chat is not held up")
    sender = make(services, fake, per_chat_interval=0.4)
    await drain(sender, db)
    await sender.close()
    assert fake.texts(5) == [f"message {i}" for i in range(5)]
    times = fake.times(5)
    assert len(times) == 5
    for first in range(len(times)):  # at most a burst of 3, then one per 0.4 s
        for last in range(first + 3, len(times)):
            assert times[last] - times[first] >= (last - first - 2) * 0.4 * 0.99
    assert fake.times(6)[0] - fake.times(5)[0] < 0.2


async def test_a_429_pauses_all_sending_and_every_message_still_goes_once(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    for chat in range(20):
        await notify(db, 100 + chat, "broadcast", f"k{chat}", text=f"to {chat}")
    fake.rate_limit(1)
    # slow enough that the 429 is answered before the next send starts, on any machine
    sender = make(services, fake, rate_per_second=5)
    await drain(sender, db)
    await sender.close()
    limited = [a for a in fake.attempts if a[3] == 429]
    assert len(limited) == 1
    after = [a[2] for a in fake.attempts if a[2] > limited[0][2]]
    assert after and min(after) >= limited[0][2] + 1.0 - 0.02
    assert sorted(s.chat_id for s in fake.sent) == list(range(100, 120))


async def test_a_blocked_user_is_marked_and_their_messages_dropped(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    await add_user(db, 7)
    await add_user(db, 8)
    fake.blocked.add(7)
    for index in range(3):
        await notify(db, 7, "broadcast", f"b{index}", text="to the blocker")
    await notify(db, 8, "broadcast", "fine", text="to a reader")
    sender = make(services, fake, per_chat_interval=0.01)
    await drain(sender, db)
    assert [a[1] for a in fake.attempts].count(7) == 1  # asked once, then dropped
    assert fake.texts(8) == ["to a reader"]
    rows = await fetch(
        db, "select blocked_bot_at is not null as blocked from users where telegram_id = 7"
    )
    assert rows == [{"blocked": True}]
    dropped = [j for j in await jobs(db) if j["payload"]["chat_id"] == 7]
    assert {j["status"] for j in dropped} == {"done"}
    assert all("blocked" in (j["last_error"] or "") for j in dropped)
    # a user marked blocked is skipped without a call
    await notify(db, 7, "broadcast", "later", text="still blocked")
    await drain(sender, db)
    await sender.close()
    assert [a[1] for a in fake.attempts].count(7) == 1


async def test_a_banned_user_gets_their_ban_and_receipts_only(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    await add_user(db, 17)
    await fetch(db, "update users set banned_at = now() where telegram_id = 17 returning 1")
    await notify(db, 17, "account_banned", "ban")
    await notify(db, 17, "broadcast", "news", text="news")
    await notify(db, 17, "payment_refunded", "refund", amount_minor=100, currency="RUB")
    sender = make(services, fake, per_chat_interval=0.01)
    await drain(sender, db)
    await sender.close()
    assert len(fake.texts(17)) == 2 and "news" not in fake.texts(17)
    skipped = [j for j in await jobs(db) if j["last_error"] == notifier.BANNED]
    assert [j["payload"]["template"] for j in skipped] == ["broadcast"]


async def test_failures_are_retried_then_dead_lettered(
    db: Database, services: Services, alerts: Alerts, fake: FakeBotApi
) -> None:
    await notify(db, 9, "payment_refunded", "transient", amount_minor=100, currency="RUB")
    fake.fail(500, "Internal Server Error")
    sender = make(services, fake, max_attempts=2)
    await sender.iteration(CTX)
    [job] = await jobs(db)
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert "Internal Server Error" in job["last_error"]
    await fetch(db, "update outbox set next_attempt_at = now()")
    fake.fail(502, "Bad Gateway")
    await sender.iteration(CTX)
    [job] = await jobs(db)
    assert (job["status"], job["attempts"]) == ("dead", 2)
    assert alerts.seen() == ["notify_dead:payment_refunded"]
    await notify(db, 9, "broadcast", "too-long", text="x")
    fake.fail(400, "Bad Request: message is too long")
    await sender.iteration(CTX)
    assert (await jobs(db))[-1]["status"] == "dead"  # permanent: at once
    assert len(alerts.seen()) == 1  # a broadcast's dead message is not alerted
    await notify(db, 9, "no_such_template", "bug")
    await sender.iteration(CTX)
    assert (await jobs(db))[-1]["status"] == "dead"
    await sender.close()


async def test_telegram_down_stops_the_batch_and_hands_the_rest_back(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    for chat in range(12):
        await notify(db, 300 + chat, "broadcast", f"k{chat}", text="x")
    fake.fail(503, "Service Unavailable", times=100)
    sender = make(services, fake, rate_per_second=100, concurrency=1)
    with pytest.raises(DependencyError):
        await sender.iteration(CTX)
    rows = await jobs(db)
    assert {r["status"] for r in rows} == {"pending"}
    tried = [r for r in rows if r["attempts"] == 1]
    assert len(tried) == notifier.OUTAGE_STREAK
    assert all(r["attempts"] == 0 for r in rows if r not in tried)  # untried, attempts intact
    await sender.close()


async def test_a_rejected_token_fails_the_iteration_and_spends_nothing(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    await notify(db, 1, "broadcast", "k", text="x")
    sender = Notifier(services, BotApi("1:wrong", api_base=fake.url), "sender-a")
    with pytest.raises(BotTokenRejected):
        await sender.iteration(CTX)
    [job] = await jobs(db)
    assert (job["status"], job["attempts"]) == ("pending", 0)
    await sender.close()


async def test_users_own_messages_go_before_a_broadcast(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    for chat in range(40):
        await outbox.enqueue_job(
            db,
            kind=job_kinds.NOTIFY,
            dedup_key=f"broadcast:9:{chat}",
            payload={"chat_id": 500 + chat, "template": "broadcast", "params": {"text": "news"}},
        )
    await notify(db, 42, "payment_received", "paid", amount_minor=100, currency="RUB")
    sender = make(services, fake, batch=10, allow_paid_broadcast=True)
    await sender.iteration(CTX)
    await sender.close()
    assert 42 in [s.chat_id for s in fake.sent]
    paid = {s.chat_id: s.params.get("allow_paid_broadcast") for s in fake.sent}
    assert paid[42] is None  # only broadcasts pay for speed
    assert {v for c, v in paid.items() if c != 42} == {True}


async def test_one_sender_at_a_time(db: Database, services: Services, fake: FakeBotApi) -> None:
    for chat in range(6):
        await notify(db, 700 + chat, "broadcast", f"k{chat}", text="x")
    first, second = make(services, fake, "a", batch=3), make(services, fake, "b", batch=3)
    await first.iteration(CTX)
    await second.iteration(CTX)  # stands by: the lease is the first's
    assert len(fake.sent) == 3
    await first.close()
    await second.iteration(CTX)
    assert len(fake.sent) == 6
    await second.close()


async def test_the_actor_sends_and_recovers_from_an_outage(
    db: Database, alerts: Alerts, fake: FakeBotApi
) -> None:
    settings = make_settings(
        telegram={"token": TOKEN, "api_base": fake.url},
        notifier={"rate_per_second": 50.0, "per_chat_interval_seconds": 0.0},
    )
    services = make_services(db, settings, alerts)
    assert [s.name for s in worker_actors(services)] == list(NAMES)
    for chat in range(8):
        await notify(db, 800 + chat, "broadcast", f"k{chat}", text="x")
    fake.fail(500, "Internal Server Error", times=notifier.OUTAGE_STREAK, retry_after=0)
    recorder = Recorder()
    spec = fast(notifier.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder) as supervisor:

        async def delivered() -> bool:
            return len(fake.sent) == 8

        await wait_until(delivered)
        assert supervisor.status_of(notifier.NAME).restarts == 0
    assert [f[1] for f in recorder.failures] == ["dependency_error"]


async def test_failing_sends_mark_the_notifier_degraded_until_one_goes_through(
    db: Database, services: Services, fake: FakeBotApi
) -> None:
    """One user's message failing is not an outage (the iteration itself succeeds), but
    the notifier says it is degraded until a send goes through; so does a 429 pause."""
    await notify(db, 11, "payment_refunded", "refund", amount_minor=100, currency="RUB")
    fake.fail(502, "Bad Gateway")  # the retry waits its backoff
    ctx = IterationContext()
    sender = make(services, fake)
    await sender.iteration(ctx)  # returns: one failure is no reason to fail the iteration
    assert ctx.degraded is not None and ctx.degraded.startswith("sends to Telegram fail")
    assert "Bad Gateway" in ctx.degraded
    assert ctx.cause == TELEGRAM  # one alert for Telegram, not one per actor
    await sender.iteration(ctx)  # nothing else to do: still degraded, nothing went through
    assert ctx.degraded is not None
    await fetch(db, "update outbox set next_attempt_at = now()")
    await sender.iteration(ctx)
    assert fake.texts(11) and ctx.degraded is None

    await notify(db, 12, "broadcast", "news", text="x")
    fake.rate_limit(1)
    await sender.iteration(ctx)  # paused, then sent
    await sender.close()
    assert fake.texts(12) == ["x"]
    assert ctx.marks[-2:] == ["rate limited by Telegram: sending paused 1 s", None]


async def test_the_actor_is_degraded_while_sends_fail_and_healthy_after(
    db: Database, alerts: Alerts, fake: FakeBotApi
) -> None:
    settings = make_settings(
        telegram={"token": TOKEN, "api_base": fake.url},
        notifier={"rate_per_second": 50.0, "per_chat_interval_seconds": 0.0},
    )
    services = make_services(db, settings, alerts)
    await notify(db, 21, "payment_refunded", "refund", amount_minor=100, currency="RUB")
    fake.fail(503, "Service Unavailable", times=10_000, retry_after=0)
    recorder = Recorder()
    spec = fast(notifier.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder) as supervisor:

        async def degraded() -> bool:
            return supervisor.status_of(notifier.NAME).degraded_reason is not None

        await wait_until(degraded)
        reason = supervisor.status_of(notifier.NAME).degraded_reason
        assert reason is not None and "Service Unavailable" in reason
        fake.scripted.clear()  # Telegram answers again

        async def healthy() -> bool:
            status = supervisor.status_of(notifier.NAME)
            return bool(fake.texts(21)) and status.degraded_reason is None

        await wait_until(healthy)


async def test_without_a_token_the_notifier_is_left_out(db: Database, alerts: Alerts) -> None:
    settings = make_settings(telegram={})
    names = [s.name for s in worker_actors(make_services(db, settings, alerts))]
    assert notifier.NAME not in names and len(names) == len(NAMES) - 1


async def test_old_per_chat_spacing_is_forgotten(services: Services, fake: FakeBotApi) -> None:
    sender = make(services, fake, per_chat_interval=0.01)
    sender.spacing.sent(1)
    await trio.sleep(0.02)
    sender.spacing.forget_old()
    assert sender.spacing.ready_at(1) == float("-inf")
    await sender.api.aclose()
