"""The instance that long-polls is cut off from the database by a firewall on its host:
it degrades, another instance takes the polling lease over and answers everyone, and when
the network heals it rejoins without a restart; its old lease is refused by the fence, and
nothing is handled or credited twice.

Two instances in polling mode, each in a network namespace of its own, reach PostgreSQL,
the Telegram emulator and the fake panel through HAProxy in the root namespace. Customers
write and buy a month with Telegram Stars before, during and after the partition. The
partition is an nftables rule in the poller's namespace dropping its packets to the
forwarded PostgreSQL port and the answers from it: the connections already open go dead
too, as on a real network cut (the test checks that on a connection of its own).

A long test (about four minutes on a loaded 2-core machine: the polling lease lasts 60 s
and a claimed update 120 s); run it with
``pytest -m long tests/integration/test_partition.py -s``. It needs root, iproute2,
nftables and HAProxy, and skips saying which is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from runtime.bot import POLLER_ACTOR
from runtime.bot._polling import LEASE
from runtime.storage import Database, inbox
from runtime.storage.leases import Lease, LeaseLost
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import SimUser, TelegramEmulator

from . import balancer, hosts
from .processes import PANEL_PASSWORD, PANEL_USER, PATIENCE, TOKEN, rows, until
from .test_process import actor
from .test_several_instances import Shop, check_once, settle, socket_of, write_config

pytestmark = pytest.mark.long

INSTANCES = 2
OPERATOR, PUBLIC = 8080, 8088
POLLING_LEASE_SECONDS = 60.0
"""The bot's polling lease (``runtime.bot``): the longest a takeover may need, plus the
other instance's wait between two attempts (a third of it)."""
TAKEOVER_SLACK = 90.0
"""Beyond the lease and the wait: a loaded machine's slow crossings and retries."""
CUSTOMERS_PER_PHASE = 2


_PROBE = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
def answered():
    sock.sendall(ssl_request)
    try:
        return bool(sock.recv(1))
    except (TimeoutError, OSError):
        return False
sock.settimeout(10)
print("answered" if answered() else "cut", flush=True)
sys.stdin.readline()
sock.settimeout(5)
print("answered" if answered() else "cut", flush=True)
"""
"""Opens a connection to PostgreSQL, shows that it is answered (an SSLRequest gets one
byte), then, when told, whether it is still answered."""


@contextmanager
def probe(host: hosts.Host, gateway: str, port: int) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        host.command([sys.executable, "-c", _PROBE, gateway, str(port)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


async def read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with trio.fail_after(60):
        return (await trio.to_thread.run_sync(process.stdout.readline)).strip()


async def status(shop: Shop, i: int) -> dict[str, Any] | None:
    """``/status`` of instance ``i``, read from the root namespace through its address."""
    address = shop.network.hosts[i].address
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://{address}:{OPERATOR}/status", timeout=5)
    except httpx.HTTPError:
        return None
    return dict(answer.json())


async def polling_lease(db: Database) -> tuple[str, int] | None:
    """The current holder and token of the polling lease (None: no one holds it)."""
    found = await rows(
        db,
        "select holder, fencing_token from leases where name = $1 and expires_at > now()",
        LEASE,
    )
    return (found[0]["holder"], found[0]["fencing_token"]) if found else None


async def customer(shop: Shop, user: SimUser) -> None:
    user.send_command("start")
    user.send_text("hello")
    await shop.buy(user, "stars")


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


async def test_the_poller_cut_off_from_the_database_is_replaced_and_rejoins_cleanly(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    reason = hosts.unavailable_reason(firewall=True) or balancer.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=PATIENCE)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot("12345:AAFakeCryptoPayAppToken0000")
    pg_socket, database = socket_of(database_dsn)
    try:
        network_cm = hosts.hosts(INSTANCES)
        network = network_cm.__enter__()
    except hosts.HostsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        async with emulator.running(), panel.running():
            gateway = network.gateway
            forwards = {
                "postgres": pg_socket,
                "telegram": urlsplit(emulator.url).netloc,
                "panel": urlsplit(panel.url).netloc,
            }
            backends = [(h.address, PUBLIC, OPERATOR) for h in network.hosts]
            with balancer.haproxy(tmp_path, gateway, backends, forwards) as (lb, ports):
                configs = [
                    write_config(
                        tmp_path / f"i{i}.toml",
                        instance=f"host-{i}",
                        address=host.address,
                        dsn=f"postgresql://postgres@{gateway}:{ports['postgres']}/{database}",
                        telegram=f"http://{gateway}:{ports['telegram']}",
                        panel=f"http://{gateway}:{ports['panel']}",
                        bot='mode = "polling"\npolling_timeout_seconds = 1',
                    )
                    for i, host in enumerate(network.hosts)
                ]
                shop = Shop(db, emulator, crypto, lb, configs, network, tmp_path)
                try:
                    for i in range(INSTANCES):
                        shop.start(i)
                    try:
                        await until(shop.all_ready, seconds=PATIENCE, what="instances ready")
                    except AssertionError:
                        raise AssertionError(
                            "\n".join(p.tail() for p in shop.running if p is not None)
                        ) from None
                    retried = await partition_and_heal(shop, ports["postgres"])
                    await settle(shop)
                finally:
                    codes = [await p.stop() for p in shop.running if p is not None]
                assert codes == [0] * INSTANCES, "\n".join(
                    p.tail() for p in shop.running if p is not None
                )
    finally:
        network_cm.__exit__(None, None, None)
    await check_once(shop, panel, retried=retried)
    assert emulator.counters["conflicts"] == 0  # never two pollers at once


async def partition_and_heal(shop: Shop, pg_port: int) -> set[int]:
    """Returns the updates the cut-off instance had claimed when it was cut off."""
    db, emulator, gateway = shop.db, shop.emulator, shop.network.gateway
    next_user = iter(range(7_000_001, 7_100_000))

    def new_customer(name: str) -> SimUser:
        user = emulator.create_user(next(next_user), first_name=name)
        shop.customers["stars"] += 1
        return user

    async with trio.open_nursery() as load:
        for n in range(CUSTOMERS_PER_PHASE):
            load.start_soon(customer, shop, new_customer(f"Before{n}"))
    await until(lambda: _held(db), seconds=PATIENCE, what="the polling lease held", every=0.5)
    before = await polling_lease(db)
    assert before is not None
    holder, token = before
    cut = next(i for i in range(INSTANCES) if holder == f"host-{i}:{POLLER_ACTOR}")
    host = shop.network.hosts[cut]
    partitioned = shop.running[cut]
    assert partitioned is not None
    print(f"\nhost-{cut} polls under token {token}: partitioned from PostgreSQL")
    acquired_before = len(acquisitions(partitioned.log))

    with probe(host, gateway, pg_port) as connection:
        assert await read_line(connection) == "answered"
        host.partition(gateway, pg_port, both_ways=True)
        cut_at, cut_wall = trio.current_time(), time.time()
        assert connection.stdin is not None
        connection.stdin.write("again\n")
        connection.stdin.flush()
        assert await read_line(connection) == "cut", "an open connection survived the partition"
    # what the cut-off instance was handling: its outcome may be a failure, counted, once
    # the network is back (a second attempt, then); anything else is handled at the first
    claimed = await rows(
        db,
        "select update_id from telegram_updates where processed_at is null"
        " and starts_with(claimed_by, $1)",
        f"host-{cut}:",
    )
    cut_off_claims = {r["update_id"] for r in claimed}

    async with trio.open_nursery() as load:
        # customers who write while the cut-off instance still holds the lease: they are
        # answered once another instance takes it over
        for n in range(CUSTOMERS_PER_PHASE):
            load.start_soon(customer, shop, new_customer(f"During{n}"))

        async def degraded() -> bool:
            document = await status(shop, cut)
            return (
                document is not None
                and document["state"] == "degraded"
                and actor(document, "database")["degraded_cause"] == "database"
            )

        await until(degraded, seconds=PATIENCE, what="the cut-off instance degraded", every=0.5)

        async def taken_over() -> bool:
            now = await polling_lease(db)
            return now is not None and now[0] != holder

        deadline = POLLING_LEASE_SECONDS * 4 / 3 + TAKEOVER_SLACK
        await until(taken_over, seconds=deadline, what="the polling lease taken over", every=0.5)
        took = trio.current_time() - cut_at
        after = await polling_lease(db)
        assert after is not None and after[1] > token
        print(f"taken over by {after[0]} under token {after[1]}, {took:.1f} s after the cut")
    # Until the takeover only the cut-off instance polled. Its offset moves on only once a
    # page is stored: one offset throughout means it acknowledged nothing it fetched, and
    # what it fetched was polled again by its successor (handled once: ``check_once``).
    taken_wall = (await acquired_at(db)).timestamp()
    fetched = [c for c in emulator.calls_of("getUpdates") if cut_wall < c.at < taken_wall]
    offsets = {str(c.params.get("offset")) for c in fetched}
    assert len(offsets) <= 1, f"the cut-off poller moved its offset: {sorted(offsets)}"
    print(f"the cut-off poller polled {len(fetched)} time(s) cut off, at offset {offsets}")
    # every customer of the partition was answered and paid before the heal
    async with trio.open_nursery() as load:
        for n in range(CUSTOMERS_PER_PHASE):
            load.start_soon(customer, shop, new_customer(f"Partitioned{n}"))
    assert partitioned.process.poll() is None, partitioned.tail()

    host.heal()
    print(f"healed {trio.current_time() - cut_at:.1f} s after the cut")

    async def rejoined() -> bool:
        document = await status(shop, cut)
        return document is not None and document["state"] == "healthy"

    await until(rejoined, seconds=PATIENCE, what="the cut-off instance healthy again", every=0.5)
    async with trio.open_nursery() as load:
        for n in range(CUSTOMERS_PER_PHASE):
            load.start_soon(customer, shop, new_customer(f"After{n}"))

    # the old tenure stays fenced out: its token writes nothing, now that the network is back
    old = Lease(LEASE, holder, token, datetime.now(UTC), POLLING_LEASE_SECONDS)
    with pytest.raises(LeaseLost, match="taken over"):
        await inbox.store(db, [], lease=old)
    assert await polling_lease(db) == after, "the lease changed hands again after the heal"

    document = await status(shop, cut)
    assert document is not None
    parked = [a["name"] for a in document["actors"] if a["state"] != "running"]
    assert not parked, document
    events = log_events(partitioned.log)
    assert len(acquisitions(partitioned.log)) == acquired_before, "it polled again"
    lost = [e for e in events if e.get("event") == "polling lease lost; waiting for it again"]
    assert lost, partitioned.tail()
    print("the cut-off poller stopped:", "; ".join(e["reason"] for e in lost))
    print(f"updates it was handling when cut off: {sorted(cut_off_claims)}")
    return cut_off_claims


async def acquired_at(db: Database) -> datetime:
    found = await rows(db, "select acquired_at from leases where name = $1", LEASE)
    when: datetime = found[0]["acquired_at"]
    return when


async def _held(db: Database) -> bool:
    return await polling_lease(db) is not None


def acquisitions(log: Path) -> list[dict[str, Any]]:
    return [e for e in log_events(log) if e.get("event") == "polling lease acquired"]
