"""A restart takes over its own leases and claims at once; another instance still waits.

Instance ``alpha`` runs, holding every lease (polling, notifier, payment watcher,
reconciliation), and is killed with SIGKILL in the middle of a Stars payment: the
``successful_payment`` update claimed, its handler inside the crediting transaction, a
notification being sent. Then every lease and claim alpha held is made to last a day
more, so that nothing in this test can outlive them: only a takeover explains what
follows. Instance ``beta`` starts and works (it activates a trial) but takes none of
alpha's leases or claims. Alpha restarts: it holds every lease again at once under a new
token, the payment is credited and confirmed to the user, the interrupted notification is
sent, and beta's trial gets its "access ready" from alpha's notifier. The kills cost no
attempt, only lost claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from runtime.config import load_settings
from runtime.storage import Database, job_kinds, outbox
from runtime.storage.subscriptions import account_name
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import TelegramEmulator

from .payment_crash import PaymentCrash
from .processes import (
    CRYPTO_TOKEN,
    PANEL_PASSWORD,
    PANEL_USER,
    PATIENCE,
    TOKEN,
    Vpnbot,
    rows,
    until,
    value,
    write_config,
)
from .test_process import free_port

LEASES = {"telegram-polling", "worker:notifier", "worker:crypto_payment_watcher"}
LEASES |= {"worker:reconciliation"}
PAYER, TRIAL_USER = 4_100_001, 4_100_002


async def leases_of(db: Database, instance: str) -> dict[str, tuple[str, int]]:
    found = await rows(
        db,
        "select name, holder, fencing_token from leases where starts_with(holder, $1)"
        " and expires_at > now()",
        f"{instance}:",
    )
    return {r["name"]: (r["holder"], r["fencing_token"]) for r in found}


async def outlive_the_test(db: Database, instance: str) -> None:
    """What ``instance`` holds now lasts a day: far past any deadline of this test."""
    prefix = f"{instance}:"
    for sql in (
        "update leases set expires_at = now() + interval '1 day' where starts_with(holder, $1)",
        "update outbox set claim_expires_at = now() + interval '1 day',"
        " next_attempt_at = now() + interval '1 day' where starts_with(claimed_by, $1)",
        "update telegram_updates set claim_expires_at = now() + interval '1 day'"
        " where starts_with(claimed_by, $1)",
    ):
        await value(db, sql + " returning 1", prefix)


async def start_trial(db: Database, user_id: int) -> int:
    """What ``Access.start_trial`` writes: the trial and its activation job."""

    async def unit(conn: Any) -> int:
        await conn.execute("insert into users (telegram_id) values ($1)", user_id)
        sid = int(
            await conn.fetchval(
                "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
                " vpn_backend, next_attempt_at) values ($1, 'trial', 'trial', now(),"
                " now() + interval '24 hours', 'marzban', now()) returning id",
                user_id,
            )
        )
        await conn.execute(
            "update subscriptions set vpn_account = $2 where id = $1",
            sid,
            account_name(user_id, sid),
        )
        await outbox.enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{sid}:trial",
            payload={"subscription_id": sid},
        )
        return sid

    return await db.transaction(unit)


async def test_a_restart_takes_over_its_own_leases_and_claims_at_once(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        payer = emulator.create_user(PAYER, first_name="Payer")
        trial_user = emulator.create_user(TRIAL_USER, first_name="Trial")

        def config(instance: str, port: int) -> Path:
            return write_config(
                tmp_path / f"{instance}.toml",
                port=port,
                dsn=database_dsn,
                telegram=emulator.url,
                panel=panel.url,
                crypto=crypto.url,
                instance=instance,
            )

        alpha_port, beta_port = free_port(), free_port()
        alpha_config = config("alpha", alpha_port)
        crash = PaymentCrash(db, emulator, load_settings(alpha_config, environ={}), payer)
        running: list[Vpnbot] = []
        try:
            alpha = Vpnbot(alpha_config, tmp_path / "alpha.log", alpha_port)
            running.append(alpha)
            await alpha.wait_ready()

            async def alpha_holds_every_lease() -> bool:
                return set(await leases_of(db, "alpha")) == LEASES

            await until(alpha_holds_every_lease, seconds=PATIENCE, what="alpha holding every lease")
            await crash.catch("alpha")
            await alpha.kill()
            running.remove(alpha)
            await crash.release()
            await outlive_the_test(db, "alpha")
            held = await leases_of(db, "alpha")
            before = await crash.state()
            assert before["payment"]["status"] == "invoiced"
            assert before["update"]["claimed_by"].startswith("alpha:bot:")
            assert before["job"]["claimed_by"].startswith("alpha:notifier:")

            # another instance works, but waits for what alpha held
            beta = Vpnbot(config("beta", beta_port), tmp_path / "beta.log", beta_port)
            running.append(beta)
            await beta.wait_ready()
            trial = await start_trial(db, TRIAL_USER)

            async def trial_active() -> bool:
                status = await value(
                    db, "select activation_status from subscriptions where id = $1", trial
                )
                return bool(status == "active")

            await until(trial_active, seconds=PATIENCE, what="beta activating the trial")
            await trio.sleep(3)  # beta's notifier tries for the lease every second meanwhile
            assert await leases_of(db, "alpha") == held
            assert await leases_of(db, "beta") == {}
            assert await crash.state() == before
            assert emulator.messages(TRIAL_USER, from_bot=True) == []

            # alpha again: everything it held is its own at once
            alpha = Vpnbot(alpha_config, tmp_path / "alpha.log", alpha_port)
            running.append(alpha)
            ready_at = await alpha.wait_ready()

            async def confirmed() -> bool:
                return bool(crash.payment_received())

            await until(confirmed, seconds=PATIENCE, what="Payment received", every=0.02)
            took = trio.current_time() - ready_at

            missing: list[str] = []

            async def all_done() -> bool:
                state = await crash.state()
                holds = set(await leases_of(db, "alpha"))
                checks = {
                    "the held update handled": state["update"]["done"],
                    "the held job done": state["job"]["status"] == "done",
                    "the hung message delivered": crash.hung_delivered(),
                    "the trial's message sent": emulator.messages(TRIAL_USER, from_bot=True),
                    f"alpha's leases (lacking {LEASES - holds})": holds == LEASES,
                }
                missing[:] = [name for name, ok in checks.items() if not ok]
                return not missing

            try:
                await until(all_done, seconds=PATIENCE, what="alpha's takeover")
            except AssertionError as failed:
                raise AssertionError(f"{failed}; still missing: {', '.join(missing)}") from None
            after = await leases_of(db, "alpha")
            print(f"\nrestart ready -> 'Payment received': {took:.2f} s")
        finally:
            codes = [await process.stop() for process in running]
            await crash.aclose()
        assert codes == [0, 0], "\n".join(p.tail() for p in running)

    # one new tenure per lease, alpha's: beta never had one
    assert after == {name: (holder, token + 1) for name, (holder, token) in held.items()}
    state = await crash.state()
    assert state["payment"]["status"] == "finalized"
    # the kill cost the update and the interrupted job an attempt each: no, a lost claim
    assert (state["update"]["attempts"], state["update"]["lost_claims"]) == (1, 1)
    assert (state["job"]["attempts"], state["job"]["lost_claims"]) == (1, 1)
    assert len(crash.payment_received()) == 1
    assert len(crash.hung_delivered()) == 1
    (access,) = trial_user.messages(from_bot=True)
    assert (access.content or "").startswith("Your VPN access is ready")
