"""Two runtime processes on one database under scripted load: every activation, expiry,
renewal and reminder happens exactly once.

The test serves the peers (the Telegram emulator, a fake Marzban, a fake CryptoBot) and
starts two ``vpnbot run --config`` processes on the same database, each with its own
instance id and HTTP port. The load is written to the database the way the runtime's own
units write it, then left to the two processes:

- trials: activated once each;
- short paid subscriptions, ending 8 to 20 seconds in: activated once, expired and
  revoked once, one "it has ended" message each;
- paid subscriptions ending just over an hour away, so the 1-hour reminder offset is
  crossed during the run: one reminder each;
- the same for users with auto-renew and a balance (the renewal lead is one hour): one
  renewal charge each, one payment row, the expiry moved a period on.

The load runs for about 25 seconds (the processes' scan intervals are set to one second
so the suite stays fast), the whole test for about 35.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from runtime.storage import Connection, Database, job_kinds, outbox, users
from runtime.storage.subscriptions import account_name
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Limits, TelegramEmulator

from .processes import PATIENCE, Vpnbot, until
from .test_process import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHtwoProcessesBotToken0123456789ab"
CRYPTO_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
PANEL_USER, PANEL_PASSWORD = "panel-admin", "panel-password-2"
ADMIN = 700
PRICE = 19900
BALANCE = 50000
PER_GROUP = 8
FAST = (
    "activation_worker",
    "fast_expiry_cleanup",
    "auto_renewal",
    "trial_notifications",
    "expiry_notifications",
)


def write_config(
    path: Path, *, instance: str, port: int, dsn: str, telegram: str, panel: str, crypto: str
) -> Path:
    actors = "".join(f"\n[actors.{name}]\ninterval_seconds = 1\n" for name in FAST)
    path.write_text(
        f"""
[service]
instance_id = "{instance}"
log_format = "json"
log_level = "info"

[database]
dsn = "{dsn}"

[http]
port = {port}

[http.public]
port = 0

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"
admin_chat_ids = [{ADMIN}]

[bot]
mode = "polling"
polling_timeout_seconds = 1
support_contact = "@help"

[notifier]
rate_per_second = 20

[reminders]
trial_before_hours = [6]
expiry_before_hours = [1]
auto_renew_lead_hours = 1

[billing]
balance_currency = "RUB"

[trial]
enabled = true
backend = "marzban"
duration_hours = 24

[plans.month]
title = {{ en = "1 month", ru = "1 месяц" }}
duration_days = 30
backend = "marzban"
traffic_limit_gb = 100
prices = {{ stars = {{ XTR = 150 }}, card = {{ RUB = {PRICE} }} }}

[plugins.settings.marzban]
base_url = "{panel}"
username = "{PANEL_USER}"
password = "{PANEL_PASSWORD}"

[plugins.settings.cryptobot]
token = "{CRYPTO_TOKEN}"
base_url = "{crypto}/api/"

[plugins.settings.telegram_payments]
card_provider_token = "381764678:TEST:card-provider"
{actors}"""
    )
    return path


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


async def value(db: Database, sql: str, *args: Any) -> Any:
    async def unit(conn: Connection) -> Any:
        return await conn.fetchval(sql, *args)

    return await db.read(unit)


async def trial(db: Database, user_id: int) -> int:
    """What ``Access.start_trial`` writes: the user's trial and its activation job."""

    async def unit(conn: Connection) -> int:
        await users.ensure_user(conn, user_id)
        sid = await conn.fetchval(
            "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
            " vpn_backend, next_attempt_at) values ($1, 'trial', 'trial', now(),"
            " now() + interval '24 hours', 'marzban', now()) returning id",
            user_id,
        )
        await conn.execute(
            "update subscriptions set vpn_account = $2 where id = $1",
            sid,
            account_name(user_id, sid),
        )
        await conn.execute("update users set trial_used_at = now() where telegram_id = $1", user_id)
        await outbox.enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{sid}:trial",
            payload={"subscription_id": sid},
        )
        return int(sid)

    return await db.transaction(unit)


async def paid(
    db: Database, user_id: int, ends_in: timedelta, *, balance: int = 0, auto_renew: bool = False
) -> int:
    """A credited purchase ending ``ends_in`` from now, with its activation job."""

    async def unit(conn: Connection) -> int:
        await users.ensure_user(conn, user_id)
        await conn.execute(
            "update users set balance_minor = $2, auto_renew = $3 where telegram_id = $1",
            user_id,
            balance,
            auto_renew,
        )
        sid = await conn.fetchval(
            "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
            " vpn_backend, next_attempt_at) values ($1, 'month', 'paid', now(), now() + $2,"
            " 'marzban', now()) returning id",
            user_id,
            ends_in,
        )
        await conn.execute(
            "update subscriptions set vpn_account = $2 where id = $1",
            sid,
            account_name(user_id, sid),
        )
        await outbox.enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{sid}:test",
            payload={"subscription_id": sid},
        )
        return int(sid)

    return await db.transaction(unit)


def chat_ids(payloads: Sequence[Any]) -> Counter[int]:
    return Counter(int(json.loads(p)["chat_id"]) for p in payloads)


async def test_two_processes_do_every_piece_of_work_exactly_once(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN, limits=Limits())
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        ports = [free_port(), free_port()]
        processes = [
            Vpnbot(
                write_config(
                    tmp_path / f"p{i}.toml",
                    instance=f"proc-{i}",
                    port=port,
                    dsn=database_dsn,
                    telegram=emulator.url,
                    panel=panel.url,
                    crypto=crypto.url,
                ),
                tmp_path / f"p{i}.log",
                port,
            )
            for i, port in enumerate(ports)
        ]
        codes: list[int] = []
        try:

            async def both_ready() -> bool:
                return all([await p.ready() for p in processes])

            try:
                await until(both_ready, seconds=PATIENCE, what="both processes ready")
            except AssertionError:
                raise AssertionError("\n".join(p.tail() for p in processes)) from None

            groups: dict[str, list[int]] = {"trial": [], "ends": [], "remind": [], "renew": []}
            owners: dict[int, int] = {}
            next_user = iter(range(5000, 6000))
            for i in range(PER_GROUP):
                for group in groups:
                    uid = next(next_user)
                    emulator.create_user(uid, first_name=f"{group}{i}")
                    if group == "trial":
                        sid = await trial(db, uid)
                    elif group == "ends":
                        sid = await paid(db, uid, timedelta(seconds=8 + 1.5 * i))
                    elif group == "remind":
                        sid = await paid(db, uid, timedelta(hours=1, seconds=5 + 2 * i))
                    else:
                        sid = await paid(
                            db,
                            uid,
                            timedelta(hours=1, seconds=5 + 2 * i),
                            balance=BALANCE,
                            auto_renew=True,
                        )
                    groups[group].append(sid)
                    owners[sid] = uid
            everyone = list(owners)

            async def settled() -> bool:
                active = await value(
                    db,
                    "select count(*) from subscriptions where id = any($1::bigint[])"
                    " and activation_status = 'active'",
                    groups["trial"] + groups["remind"] + groups["renew"],
                )
                revoked = await value(
                    db,
                    "select count(*) from subscriptions where id = any($1::bigint[])"
                    " and status = 'expired' and activation_status = 'revoked'",
                    groups["ends"],
                )
                renewed = await value(db, "select count(*) from payments where purpose = 'renewal'")
                reminded = await value(
                    db,
                    "select count(*) from outbox where dedup_key like 'remind:%:1:%'"
                    " and (payload->'params'->>'subscription_id')::bigint = any($1::bigint[])",
                    groups["remind"],
                )
                pending = await value(db, "select count(*) from outbox where status <> 'done'")
                return bool(
                    active == 3 * PER_GROUP
                    and revoked == PER_GROUP
                    and renewed == PER_GROUP
                    and reminded == PER_GROUP
                    and pending == 0
                )

            try:
                await until(settled, seconds=PATIENCE, what="all the work done")
            except AssertionError:
                jobs = await rows(db, "select kind, dedup_key, status, last_error from outbox")
                states = await rows(
                    db, "select id, status, activation_status, last_error from subscriptions"
                )
                raise AssertionError(f"{jobs}\n{states}") from None
            await trio.sleep(3)  # time for a second copy of anything to show up
            await emulator.wait_drained()
        finally:
            for process in processes:
                codes.append(await process.stop())
        assert codes == [0, 0], "\n".join(p.tail() for p in processes)

    # activations: one panel call per activation (a renewal's "create" finds the user and
    # updates it instead), one panel user per subscription
    created = Counter(r.json()["username"] for r in panel.calls("POST") if r.path == "/api/user")
    updated = Counter(
        r.path.rsplit("/", 1)[-1]
        for r in panel.calls("PUT")
        if r.path.startswith("/api/user/") and r.json().get("status") != "disabled"
    )
    for sid in everyone:
        name = account_name(owners[sid], sid)
        periods = 2 if sid in groups["renew"] else 1
        assert (created[name], updated[name]) == (periods, periods - 1), sid
    assert sum(created.values()) == len(everyone) + PER_GROUP
    # expiries: the ended ones disabled on the panel once; the rest still active
    disabled = Counter(
        r.path.rsplit("/", 1)[-1]
        for r in panel.calls("PUT")
        if r.path.startswith("/api/user/") and r.json().get("status") == "disabled"
    )
    for sid in groups["ends"]:
        name = account_name(owners[sid], sid)
        assert disabled[name] == 1 and panel.users[name]["status"] == "disabled", sid
    for sid in groups["trial"] + groups["remind"] + groups["renew"]:
        assert panel.users[account_name(owners[sid], sid)]["status"] == "active", sid
    assert sum(disabled.values()) == PER_GROUP
    assert len(panel.users) == len(everyone)
    assert panel.calls("DELETE") == []
    jobs = await rows(
        db, "select kind, dedup_key, payload::text, status, attempts, done_at from outbox"
    )
    # no job done twice: each was claimed once, by one process, and completed once
    assert all(j["status"] == "done" and j["done_at"] is not None for j in jobs)
    assert Counter(j["attempts"] for j in jobs) == {1: len(jobs)}
    by_kind = Counter(j["kind"] for j in jobs)
    assert by_kind[job_kinds.REVOKE] == PER_GROUP
    # one activation per subscription, one more per renewal
    assert by_kind[job_kinds.ACTIVATE] == len(everyone) + PER_GROUP

    # renewals: one charge per period
    renewals = await rows(
        db, "select user_id, amount_minor, status from payments where purpose = 'renewal'"
    )
    assert sorted(r["user_id"] for r in renewals) == sorted(owners[s] for s in groups["renew"])
    assert {r["amount_minor"] for r in renewals} == {PRICE}
    for sid in groups["renew"]:
        balance = await value(
            db, "select balance_minor from users where telegram_id = $1", owners[sid]
        )
        assert balance == BALANCE - PRICE
        left = await value(db, "select expires_at - now() from subscriptions where id = $1", sid)
        assert left > timedelta(days=30)

    # reminders: one per subscription and offset, and every message arrived once
    notes = [j for j in jobs if j["kind"] == job_kinds.NOTIFY]
    keys = Counter(
        ":".join(j["dedup_key"].split(":")[:3])
        for j in notes
        if j["dedup_key"].startswith("remind:")
    )
    assert all(count == 1 for count in keys.values())
    for sid in groups["remind"]:
        assert keys[f"remind:{sid}:1"] == 1, sid
    for sid in groups["ends"]:
        assert keys[f"remind:{sid}:0"] == 1, sid
    queued = chat_ids([j["payload"] for j in notes])
    for uid in owners.values():
        got = len(emulator.messages(uid, from_bot=True))
        assert got == queued[uid], (uid, got, queued[uid])
    assert emulator.counters["answered.429"] == 0

    # both processes did some of the work
    claimers = await rows(db, "select distinct claimed_by from outbox where claimed_by is not null")
    instances = {str(r["claimed_by"]).split(":", 1)[0] for r in claimers}
    assert instances == {"proc-0", "proc-1"}, instances
