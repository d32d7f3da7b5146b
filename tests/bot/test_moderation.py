"""An admin's hand on one user, through the bot: bans, balance corrections, revocations
and the audit history, each once per update and each in the audit log."""

from __future__ import annotations

import pytest

from runtime.bot import keyboards as kb
from runtime.bot.handlers.moderation import parse_amount
from runtime.i18n import load_translator
from runtime.storage import job_kinds
from runtime.storage.scans import recipients

from . import test_handlers
from .conftest import ADMIN, Shop
from .test_handlers import USER, Driver, assert_translated, buttons, by_method, texts

shop = test_handlers.shop
driver = test_handlers.driver


async def run_again(shop: Shop, update_id: int) -> None:
    """The update handled again, as after a crash before it was marked processed."""
    await shop.value(
        "update telegram_updates set processed_at = null, claim_expires_at = null"
        " where update_id = $1 returning 1",
        update_id,
    )


async def test_a_banned_user_is_told_once_and_ignored_but_their_payment_counts(
    driver: Driver, shop: Shop
) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]
    calls = await driver.send(ADMIN, f"/ban @user{USER} spam in support")
    assert texts(calls) == [
        f"User {USER} is banned. They were told once; payments they make still count."
    ]
    told = await shop.fetch(
        "select payload from outbox where kind = $1 and payload->>'template' = 'account_banned'",
        job_kinds.NOTIFY,
    )
    assert [t["payload"]["chat_id"] for t in told] == [USER]

    assert await driver.send(USER, "/start") == []
    assert await driver.press(USER, kb.Nav(to="plans")) == []
    calls = await driver.pre_checkout(USER, payload, "XTR", 150)
    (answer,) = by_method(calls, "answerPreCheckoutQuery")
    assert answer.params["ok"] is False and "not available" in answer.params["error_message"]
    # a payment Telegram took before the ban is still credited
    await driver.deliver(driver.payment_update(USER, payload, "XTR", 150, "charge-b1"))
    assert await shop.value("select status from payments") == "finalized"

    (recipient,) = (await recipients(shop.db, [USER])).values()
    assert recipient.banned

    calls = await driver.send(ADMIN, f"/ban {USER}")
    assert texts(calls) == [f"User {USER} was banned already."]
    calls = await driver.send(ADMIN, f"/unban {USER}")
    assert texts(calls) == [f"User {USER} is no longer banned."]
    assert texts(await driver.send(USER, "/help"))  # heard again
    actions = await shop.fetch(
        "select action, actor, reason from audit_log where user_id = $1 order by id", USER
    )
    assert actions == [
        {"action": "user.ban", "actor": f"admin:{ADMIN}", "reason": "spam in support"},
        {"action": "user.ban", "actor": f"admin:{ADMIN}", "reason": None},
        {"action": "user.unban", "actor": f"admin:{ADMIN}", "reason": None},
    ]
    assert await shop.value("select count(*) from outbox where dedup_key like 'notify:ban:%'") == 1


async def test_a_banned_user_gets_no_broadcast(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    await driver.send(701, "/start")
    await driver.send(ADMIN, f"/ban {USER}")
    calls = await driver.send(ADMIN, "/broadcast all Hello")
    assert any("2 recipients" in text for text in texts(calls))  # the other user, the admin


async def test_a_balance_correction_happens_once_per_command(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    update = driver.message(ADMIN, text=f"/credit {USER} +150.50 compensation for the outage")
    calls = await driver.deliver(update)
    assert texts(calls) == [f"Added ₽150.50 to the balance of {USER}. Balance: ₽150.50."]
    await run_again(shop, update["update_id"])
    calls = await driver.deliver()
    assert texts(calls) == ["This was done already."]
    assert await shop.value("select balance_minor from users where telegram_id = $1", USER) == 15050

    calls = await driver.send(ADMIN, f"/credit {USER} -200 wrong top-up")
    assert texts(calls) == [f"Took ₽150.50 from the balance of {USER}. Balance: ₽0.00."]
    calls = await driver.send(ADMIN, f"/credit {USER} -1 again")
    assert texts(calls) == [f"The balance of {USER} is empty: nothing was taken."]
    history = await shop.fetch(
        "select action, balance_delta_minor, reason from audit_log where user_id = $1 order by id",
        USER,
    )
    assert history == [
        {
            "action": "balance.add",
            "balance_delta_minor": 15050,
            "reason": "compensation for the outage",
        },
        {"action": "balance.take", "balance_delta_minor": -15050, "reason": "wrong top-up"},
        {"action": "balance.take", "balance_delta_minor": 0, "reason": "again"},
    ]


@pytest.mark.parametrize(
    "args",
    [
        "",
        f"{USER}",
        f"{USER} +150",  # no reason
        f"{USER} 0 nothing",
        f"{USER} +1.001 too precise",
        f"{USER} +99999999999 too much",
        "'; drop table users; -- +1 x",
    ],
)
async def test_a_malformed_correction_changes_nothing(
    driver: Driver, shop: Shop, args: str
) -> None:
    await driver.send(USER, "/start")
    calls = await driver.send(ADMIN, f"/credit {args}")
    assert texts(calls)[0].startswith("Usage: /credit")
    assert await shop.value("select count(*) from audit_log") == 0


def test_amounts_follow_the_currencys_decimals() -> None:
    assert parse_amount("+", "150", "5", "RUB") == 15050
    assert parse_amount("-", "20", None, "RUB") == -2000
    assert parse_amount("", "7", None, "XTR") == 7
    assert parse_amount("", "7", "5", "XTR") is None
    assert parse_amount("", "0", "00", "RUB") is None


async def test_revoking_access_ends_every_active_subscription_once(
    driver: Driver, shop: Shop
) -> None:
    await driver.press(USER, kb.Nav(to="trial"))
    update = driver.message(ADMIN, text=f"/revoke {USER} chargeback")
    calls = await driver.deliver(update)
    assert texts(calls)[0].startswith(f"Access of {USER} revoked: 1 subscription(s).")
    await run_again(shop, update["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    assert await shop.value("select status from subscriptions where user_id = $1", USER) == (
        "revoked"
    )
    jobs = await shop.fetch("select kind from outbox where dedup_key like 'revoke:%'")
    assert jobs == [{"kind": job_kinds.REVOKE}]
    calls = await driver.send(ADMIN, f"/revoke {USER}")
    assert texts(calls) == [f"User {USER} has no active subscription."]


async def test_the_history_shows_grants_and_admin_actions_newest_first(
    driver: Driver, shop: Shop
) -> None:
    await driver.send(USER, "/start")
    await driver.send(ADMIN, f"/grant {USER} 30")
    await driver.send(ADMIN, f"/credit {USER} +10 goodwill")
    calls = await driver.send(ADMIN, f"/user {USER}")
    history = next(b for b in buttons(calls) if "history" in b["callback_data"])
    calls = await driver.press(ADMIN, history["callback_data"])
    (text,) = texts(calls)
    lines = text.splitlines()
    assert lines[0] == f"History of {USER} (newest first):"
    assert "balance added (+₽10.00)" in lines[1] and f"admin:{ADMIN} · goodwill" in lines[1]
    assert "days granted (+30 days)" in lines[2]
    calls = await driver.send(ADMIN, f"/history {USER}", lang="ru")
    calls += await driver.send(ADMIN, "/history 404")
    assert texts(calls)[-1] == "No user 404."
    assert_translated(calls)


async def test_non_admins_reach_none_of_it(driver: Driver, shop: Shop) -> None:
    unknown = load_translator().t("en", "errors.unknown_command")
    await driver.send(USER, "/start")
    for command in (f"/ban {ADMIN}", f"/unban {USER}", f"/credit {USER} +5 x", "/revoke 1"):
        assert texts(await driver.send(USER, command)) == [unknown], command
    calls = await driver.press(USER, kb.AdminCb(action="history", arg=str(USER)))
    assert [c.method for c in calls] == ["answerCallbackQuery"]
    assert await shop.value("select count(*) from audit_log") == 0
    assert await shop.value("select balance_minor from users where telegram_id = $1", USER) == 0


async def test_a_forwarded_message_opens_its_senders_card(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    # a user's command, forwarded, is the user's card too: not the admin's own menu
    for said in ("my VPN does not work", "/start"):
        forwarded = driver.message(
            ADMIN,
            text=said,
            forward_origin={"type": "user", "date": 1, "sender_user": driver.person(USER)},
        )
        (text,) = texts(await driver.deliver(forwarded))
        assert text.startswith(f"User {USER} @user{USER}"), said
    hidden = driver.message(
        ADMIN,
        text="my VPN does not work",
        forward_origin={"type": "hidden_user", "date": 1, "sender_user_name": "Anna"},
    )
    assert texts(await driver.deliver(hidden))[0].startswith("The sender of this message hides")
    # a user forwarding something to the bot sees no one's card
    mine = driver.message(
        USER,
        text="look",
        forward_origin={"type": "user", "date": 1, "sender_user": driver.person(ADMIN)},
    )
    assert "User 900" not in " ".join(texts(await driver.deliver(mine)))


async def test_admins_find_users_by_the_name_telegram_shows(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    await driver.send(502, "/start")
    assert await shop.value("select display_name from users where telegram_id = $1", USER) == (
        f"User{USER}"
    )
    calls = await driver.send(ADMIN, "/user ser50")
    assert texts(calls) == ["Users whose name contains “ser50”:"]
    found = [
        b["callback_data"] for b in buttons(calls) if b["callback_data"].startswith("adm:user")
    ]
    assert sorted(found) == [f"adm:user:{USER}:0", "adm:user:502:0"]
    (text,) = texts(await driver.send(ADMIN, "/user ser502"))  # one match: the card
    assert text.startswith("User 502 @user502")
    assert texts(await driver.send(ADMIN, "/user %"))[0].startswith("No user")
    assert texts(await driver.send(ADMIN, "/user @ser50")) == ["No user @ser50."]
    # a new name is kept once it changes, and only then
    renamed = driver.message(USER, text="/help")
    renamed["message"]["from"]["first_name"] = "Анна"
    await driver.deliver(renamed)
    assert await shop.value("select display_name from users where telegram_id = $1", USER) == (
        "Анна"
    )
