"""Three instances on three hosts behind a load balancer, killed and restarted at random
under a mixed load: nothing lost, nothing doubled, no update handled twice.

Each instance is a ``vpnbot run`` in webhook mode in a network namespace of its own (its
own address, as a host would have); HAProxy in the root namespace balances the public
webhooks over the three, health-checking ``/readyz``, and forwards the hosts to
PostgreSQL, the Telegram emulator, the fake Marzban and the fake CryptoBot. Telegram's
webhook and Crypto Pay's both come in through the balancer, so any instance may get any
update or payment. Customers buy a month with Telegram Stars or CryptoBot (commands,
button presses, pre-checkout queries, payments, a signed webhook), while instances are
SIGKILLed and restarted at random (a seeded RNG: the seed is printed; set
``VPNBOT_TEST_SEED`` to run the same schedule again).

A long test (about two minutes on a loaded 2-core machine); run it with
``pytest -m long tests/integration/test_several_instances.py``. It needs root, iproute2
and HAProxy, and skips saying which is missing.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from runtime.storage import Database
from runtime.storage.inbox import GAVE_UP
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import Message, SimUser, TelegramEmulator

from . import balancer, hosts
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
)

pytestmark = pytest.mark.long

INSTANCES = 3
OPERATOR, PUBLIC = 8080, 8088
"""The same ports on every host: each namespace has its own."""
HOOK = "/telegram/hook"
SECRET = "several-Instances_secret"
CUSTOMERS = 8
KILLS = 5
RECEIVED = "Payment received"


def write_config(
    path: Path,
    *,
    instance: str,
    address: str,
    dsn: str,
    telegram: str,
    panel: str,
    bot: str,
    crypto: str | None = None,
) -> Path:
    """One host's config: its instance id and listeners on its own address, the shared
    database, Telegram and panel through the balancer's forwards, and ``bot``'s table
    (webhook or polling). With ``crypto``, the month plan is also sold through CryptoBot."""
    prices = "stars = { XTR = 150 }" + ("" if crypto is None else ", cryptobot = { RUB = 19900 }")
    cryptobot = (
        ""
        if crypto is None
        else f'[plugins.settings.cryptobot]\ntoken = "{CRYPTO_TOKEN}"\nbase_url = "{crypto}/api/"\n'
    )
    path.write_text(
        f"""
[service]
instance_id = "{instance}"
log_format = "json"
log_level = "info"

[database]
dsn = "{dsn}"

[http]
host = "{address}"
port = {OPERATOR}

[http.public]
host = "{address}"
port = {PUBLIC}

[telegram]
token = "{TOKEN}"
api_base = "{telegram}"

[bot]
{bot}

[plans.month]
title = {{ en = "1 month" }}
duration_days = 30
backend = "marzban"
prices = {{ {prices} }}

[plugins.settings.marzban]
base_url = "{panel}"
username = "{PANEL_USER}"
password = "{PANEL_PASSWORD}"

{cryptobot}
[plugins.settings.telegram_payments]
card_provider_token = "381764678:TEST:card-provider"
"""
    )
    return path


def socket_of(dsn: str) -> tuple[str, str]:
    """The Unix socket path and the database name of the test PostgreSQL's DSN."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    port = query.get("port", ["5432"])[0]
    return f"{query['host'][0]}/.s.PGSQL.{port}", parts.path.lstrip("/")


def newest(user: SimUser, check: Callable[[Message], bool]) -> Callable[[], Message | None]:
    def find() -> Message | None:
        for message in reversed(user.messages(from_bot=True)):
            if check(message):
                return message
        return None

    return find


def has_button(label: str) -> Callable[[Message], bool]:
    return lambda m: any(label in b.text for row in m.buttons() for b in row)


class Shop:
    """The peers, the balancer and the instances of one run."""

    def __init__(
        self,
        db: Database,
        emulator: TelegramEmulator,
        crypto: FakeCryptoBot,
        lb: str,
        configs: list[Path],
        network: hosts.Network,
        logs: Path,
    ) -> None:
        self.db = db
        self.emulator = emulator
        self.crypto = crypto
        self.lb = lb
        self.configs = configs
        self.network = network
        self.logs = logs
        self.running: list[Vpnbot | None] = [None] * len(configs)
        self.paid_crypto: list[str] = []
        self.customers: Counter[str] = Counter()

    def start(self, i: int) -> Vpnbot:
        host = self.network.hosts[i]
        process = Vpnbot(
            self.configs[i], self.logs / f"i{i}.log", OPERATOR, host=host.address, wrap=host.command
        )
        self.running[i] = process
        return process

    async def press(self, user: SimUser, message: Message, label: str, then: str) -> Message:
        user.press(message, text=label)
        found: Message = await self.emulator.wait_until(
            newest(user, lambda m: then in m.content), timeout=PATIENCE, what=repr(then)
        )
        return found

    async def buy(self, user: SimUser, method: str) -> None:
        hello = user.send_command("buy")
        plans = await user.wait_for_message(has_button("1 month"), after=hello, timeout=PATIENCE)
        plan = await self.press(user, plans, "1 month", "Choose how to pay")
        if method == "stars":
            user.press(plan, text="Telegram Stars")
            invoice = await user.wait_for_message(
                lambda m: m.invoice is not None, after=plan, timeout=PATIENCE
            )
            paid = await user.pay(invoice)
            assert paid.ok, paid
            return
        user.press(plan, text="CryptoBot")
        await self.emulator.wait_until(
            newest(user, lambda m: any(b.url for row in m.buttons() for b in row)),
            timeout=PATIENCE,
            what="a payment link",
        )
        intent = await value(
            self.db,
            "select id::text from payments where provider = 'cryptobot' and user_id = $1"
            " order by created_at desc limit 1",
            user.id,
        )
        invoice_id = self.crypto.invoice_for(intent)["invoice_id"]
        self.crypto.pay(invoice_id)
        self.paid_crypto.append(intent)
        await self.deliver(invoice_id)

    async def deliver(self, invoice_id: int) -> None:
        """Crypto Pay's webhook through the balancer, again until it is answered 200."""
        headers, body = self.crypto.webhook_delivery(invoice_id)
        url = f"{self.lb}/webhooks/payments/cryptobot"
        with trio.fail_after(PATIENCE):
            while True:
                try:
                    async with httpx.AsyncClient() as client:
                        answer = await client.post(url, content=body, headers=headers, timeout=30)
                    if answer.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.5)

    async def chaos(self, rng: random.Random) -> list[str]:
        """SIGKILL an instance at random, restart it a moment later; ``KILLS`` times."""
        done: list[str] = []
        for _ in range(KILLS):
            await trio.sleep(rng.uniform(2.0, 6.0))
            i = rng.randrange(len(self.running))
            victim = self.running[i]
            if victim is not None:
                await victim.kill()
                self.running[i] = None
            pause = rng.uniform(0.5, 4.0)
            done.append(f"i{i} killed, back after {pause:.1f} s")
            await trio.sleep(pause)
            self.start(i)
        return done

    async def all_ready(self) -> bool:
        return all([p is not None and await p.ready() for p in self.running])


async def test_three_instances_behind_a_balancer_lose_and_double_nothing(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    reason = hosts.unavailable_reason() or balancer.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    seed = int(os.environ.get("VPNBOT_TEST_SEED", random.randrange(1 << 32)))
    print(f"\nVPNBOT_TEST_SEED={seed}")
    rng = random.Random(seed)
    emulator = TelegramEmulator(
        TOKEN,
        pre_checkout_timeout=PATIENCE,
        webhook_retry_delays=(0.2, 0.5, 1.0, 2.0, 3.0),
        webhook_recheck=2.0,
    )
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    pg_socket, database = socket_of(database_dsn)
    try:
        network_cm = hosts.hosts(INSTANCES)
        network = network_cm.__enter__()
    except hosts.HostsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        async with emulator.running(), panel.running(), crypto.running():
            gateway = network.gateway
            forwards = {
                "postgres": pg_socket,
                "telegram": urlsplit(emulator.url).netloc,
                "panel": urlsplit(panel.url).netloc,
                "crypto": urlsplit(crypto.url).netloc,
            }
            backends = [(h.address, PUBLIC, OPERATOR) for h in network.hosts]
            with balancer.haproxy(tmp_path, gateway, backends, forwards) as (lb, ports):
                crypto.webhook_url = None  # the test delivers, and again until answered
                configs = []
                for i, host in enumerate(network.hosts):
                    path = write_config(
                        tmp_path / f"i{i}.toml",
                        instance=f"host-{i}",
                        address=host.address,
                        dsn=f"postgresql://postgres@{gateway}:{ports['postgres']}/{database}",
                        telegram=f"http://{gateway}:{ports['telegram']}",
                        panel=f"http://{gateway}:{ports['panel']}",
                        bot=f'mode = "webhook"\nwebhook_url = "{lb}{HOOK}"\n'
                        f'webhook_secret = "{SECRET}"',
                        crypto=f"http://{gateway}:{ports['crypto']}",
                    )
                    configs.append(path)
                shop = Shop(db, emulator, crypto, lb, configs, network, tmp_path)
                try:
                    for i in range(INSTANCES):
                        shop.start(i)
                    try:
                        await until(shop.all_ready, seconds=PATIENCE, what="three instances ready")
                    except AssertionError:
                        raise AssertionError(
                            "\n".join(p.tail() for p in shop.running if p is not None)
                        ) from None
                    schedule = await run_load(shop, rng)
                    print("\n".join(schedule))
                    await until(shop.all_ready, seconds=PATIENCE, what="all back and ready")
                    await settle(shop)
                finally:
                    codes = [await p.stop() for p in shop.running if p is not None]
                assert codes == [0] * INSTANCES, "\n".join(
                    p.tail() for p in shop.running if p is not None
                )
    finally:
        network_cm.__exit__(None, None, None)
    await check_once(shop, panel)


async def run_load(shop: Shop, rng: random.Random) -> list[str]:
    """Customers arrive every second or two until the chaos is over (at least
    ``CUSTOMERS``); returns what the chaos did."""
    schedule: list[str] = []
    stop = trio.Event()

    async def chaos() -> None:
        schedule.extend(await shop.chaos(rng))
        stop.set()

    async def customer(user: SimUser, method: str) -> None:
        user.send_command("start")
        user.send_text("hello")
        await shop.buy(user, method)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chaos)
        async with trio.open_nursery() as load:
            n = 0
            while n < CUSTOMERS or not stop.is_set():
                user = shop.emulator.create_user(6_000_001 + n, first_name=f"C{n}")
                method = "stars" if n % 2 == 0 else "crypto"
                shop.customers[method] += 1
                load.start_soon(customer, user, method)
                n += 1
                await trio.sleep(rng.uniform(0.5, 2.0))
    return schedule


async def settle(shop: Shop) -> None:
    """Wait until every update is handled, every job done and every payment confirmed."""

    async def quiet() -> bool:
        shop.emulator.flush_webhook()
        pending_updates = await value(
            shop.db, "select count(*) from telegram_updates where processed_at is null"
        )
        pending_jobs = await value(shop.db, "select count(*) from outbox where status <> 'done'")
        received = sum(
            1
            for u in shop.emulator.users
            for m in u.messages(from_bot=True)
            if RECEIVED in m.content
        )
        return bool(
            not shop.emulator.pending_updates()
            and pending_updates == 0
            and pending_jobs == 0
            and received >= shop.customers.total()
        )

    try:
        await until(quiet, seconds=PATIENCE, what="every update, job and payment settled")
    except AssertionError:
        jobs = await rows(shop.db, "select kind, dedup_key, status, last_error from outbox")
        raise AssertionError(str(jobs)) from None
    await trio.sleep(3)  # time for a second copy of anything to show up
    await shop.emulator.wait_drained()


async def check_once(shop: Shop, panel: FakeMarzban, *, retried: Collection[int] = ()) -> None:
    """Everything once. ``retried``: updates whose handling may have failed once (their
    first attempt was cut off from the database), so their second attempt counts."""
    db, emulator = shop.db, shop.emulator
    # every update Telegram made is in the inbox once, handled, none given up; lost claims
    # (a kill mid-handler) gave their attempt back
    updates = await rows(
        db,
        "select update_id, processed_at, attempts, lost_claims, last_error from telegram_updates",
    )
    assert len(updates) == emulator.counters["updates"]
    assert all(u["processed_at"] is not None for u in updates)
    assert not [u for u in updates if (u["last_error"] or "").startswith(GAVE_UP)]
    assert Counter(u["attempts"] for u in updates if u["update_id"] not in retried) == {
        1: len([u for u in updates if u["update_id"] not in retried])
    }
    assert all(u["attempts"] <= 2 for u in updates)
    lost = sum(u["lost_claims"] for u in updates)
    print(f"customers: {dict(shop.customers)}, updates: {len(updates)}, claims lost: {lost}")

    # every payment credited once: one finalized row per Stars charge and per paid invoice
    stars = [p.telegram_payment_charge_id for p in emulator.payments()]
    assert len(stars) == shop.customers["stars"]
    finalized = await rows(
        db, "select provider, external_id, user_id from payments where status = 'finalized'"
    )
    assert sorted(r["external_id"] for r in finalized if r["provider"] == "stars") == sorted(stars)
    crypto_rows = await rows(
        db,
        "select id::text, status from payments where provider = 'cryptobot'"
        " and status = 'finalized'",
    )
    assert sorted(r["id"] for r in crypto_rows) == sorted(shop.paid_crypto)
    assert len(finalized) == shop.customers.total()

    # one "Payment received" per payment, one subscription and one account per customer
    for user in emulator.users:
        got = [m for m in user.messages(from_bot=True) if RECEIVED in m.content]
        assert len(got) == 1, (user.id, [m.content for m in got])
    subscriptions = await rows(
        db, "select user_id, vpn_account, activation_status from subscriptions"
    )
    assert Counter(s["user_id"] for s in subscriptions) == {u.id: 1 for u in emulator.users}
    assert {s["activation_status"] for s in subscriptions} == {"active"}
    assert sorted(panel.users) == sorted(s["vpn_account"] for s in subscriptions)
    assert await value(db, "select count(*) from outbox where status <> 'done'") == 0
