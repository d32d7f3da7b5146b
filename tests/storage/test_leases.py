"""Leases against a real PostgreSQL: tokens, expiry, fencing, the keeper, racing processes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime.storage import Connection, Database
from runtime.storage.leases import (
    Lease,
    LeaseKeeper,
    LeaseLost,
    acquire,
    check_fence,
    release,
    renew,
)

ROOT = Path(__file__).resolve().parents[2]
RACER = Path(__file__).with_name("lease_proc.py")

LOG_TABLE = """
create table lease_log (
    id         bigserial primary key,
    holder     text not null,
    token      bigint not null,
    started_at timestamptz not null,
    ended_at   timestamptz
)
"""


async def execute(db: Database, sql: str, *args: Any) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def fenced_write(db: Database, lease: Lease, *, pause: float = 0.0) -> datetime:
    """Log a write made under ``lease``; returns its time on the database's clock."""

    async def unit(conn: Connection) -> datetime:
        await conn.execute(
            "insert into lease_log (holder, token, started_at) values ($1, $2, clock_timestamp())",
            lease.holder,
            lease.token,
        )
        await check_fence(conn, lease)
        if pause:
            await conn.execute("select pg_sleep($1)", pause)
        written: datetime = await conn.fetchval(
            "update lease_log set ended_at = clock_timestamp()"
            " where id = currval('lease_log_id_seq') returning ended_at"
        )
        return written

    return await db.transaction(unit)


@pytest.fixture
async def logged(db: Database) -> Database:
    await execute(db, LOG_TABLE)
    return db


# -- acquire, renew, release ------------------------------------------------------------------


async def test_acquire_renew_release(db: Database) -> None:
    a = await acquire(db, "scan", "a", 30)
    assert a is not None and (a.name, a.holder, a.token) == ("scan", "a", 1)
    assert await acquire(db, "scan", "b", 30) is None  # held
    assert await acquire(db, "other", "b", 30) is not None  # leases are independent

    renewed = await renew(db, a)
    assert renewed is not None and renewed.token == 1 and renewed.expires_at >= a.expires_at

    assert await release(db, a)
    b = await acquire(db, "scan", "b", 30)  # free at once after a release
    assert b is not None and b.token == 2
    assert await renew(db, a) is None  # the old holder lost it
    assert not await release(db, a)  # and cannot release someone else's lease
    assert (await acquire(db, "scan", "a", 30)) is None

    assert await release(db, b)
    a2 = await acquire(db, "scan", "a", 30)  # a new tenure for an old holder: a new token
    assert a2 is not None and a2.token == 3


async def test_the_same_holder_name_takes_its_unexpired_lease_over_with_a_new_token(
    logged: Database,
) -> None:
    """A restart of an instance acquires under the same holder name: it gets the lease at
    once, although the dead tenure's expiry is a day away, and the old token is fenced
    out. Anyone else still waits for the expiry."""
    db = logged
    old = await acquire(db, "scan", "vpn-1:notifier", 86400)
    assert old is not None
    await fenced_write(db, old)

    assert await acquire(db, "scan", "vpn-2:notifier", 86400) is None
    new = await acquire(db, "scan", "vpn-1:notifier", 86400)
    assert new is not None and new.token == old.token + 1
    assert await acquire(db, "scan", "vpn-2:notifier", 86400) is None

    with pytest.raises(LeaseLost, match="taken over"):
        await fenced_write(db, old)
    assert await renew(db, old) is None
    assert not await release(db, old)
    await fenced_write(db, new)
    renewed = await renew(db, new)
    assert renewed is not None and renewed.token == new.token  # only renew keeps a token
    rows = await fetch(db, "select holder, token from lease_log order by id")
    assert rows == [
        {"holder": "vpn-1:notifier", "token": 1},
        {"holder": "vpn-1:notifier", "token": 2},
    ]


async def test_a_holder_that_stops_renewing_is_replaced_with_a_higher_token(
    logged: Database,
) -> None:
    db = logged
    old = await acquire(db, "scan", "a", 0.2)
    assert old is not None
    assert await acquire(db, "scan", "b", 0.2) is None
    await fenced_write(db, old)
    await trio.sleep(0.3)  # a stops renewing (paused, partitioned, killed)

    with pytest.raises(LeaseLost, match="expired"):  # expired, even before anyone took it
        await fenced_write(db, old)
    new = await acquire(db, "scan", "b", 5)
    assert new is not None and new.token == old.token + 1
    assert await renew(db, old) is None

    with pytest.raises(LeaseLost, match="taken over"):
        await fenced_write(db, old)
    await fenced_write(db, new)
    rows = await fetch(db, "select holder, token from lease_log order by id")
    assert rows == [{"holder": "a", "token": 1}, {"holder": "b", "token": 2}]  # rolled back


async def test_the_fence_keeps_the_lease_from_changing_hands_until_the_write_commits(
    logged: Database,
) -> None:
    """a's unit passes the fence, then its lease expires while the unit still runs: b can
    take the lease over only once a's transaction has ended, so b's writes come after."""
    db = logged
    a = await acquire(db, "scan", "a", 0.2)
    assert a is not None
    a_wrote: list[datetime] = []

    async def slow_writer() -> None:
        a_wrote.append(await fenced_write(db, a, pause=0.6))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_writer)
        # wait until a's unit is past the fence and sleeping, then until the lease expired
        with trio.fail_after(60):
            while True:
                sleeping = await fetch(
                    db,
                    "select 1 from pg_stat_activity where datname = current_database()"
                    " and state = 'active' and query like 'select pg_sleep%'",
                )
                if sleeping:
                    break
                await trio.sleep(0.01)
        await trio.sleep(0.25)
        b = await acquire(db, "scan", "b", 5)  # waits on a's row lock
        assert b is not None and b.token == 2
        b_wrote = await fenced_write(db, b)
    assert a_wrote and a_wrote[0] < b_wrote


# -- the keeper -------------------------------------------------------------------------------


async def test_the_keeper_renews_while_the_body_runs_and_releases_after(
    logged: Database,
) -> None:
    db = logged
    # renewals far more often than the ttl, so that a starved machine cannot lose it: the
    # test waits for renewals to be seen, not for the clock
    keeper = LeaseKeeper(db, "scan", "a", ttl_seconds=30, renew_every=0.05)

    async def renewed_at() -> datetime:
        (row,) = await fetch(db, "select renewed_at from leases where name = 'scan'")
        stamp: datetime = row["renewed_at"]
        return stamp

    async with keeper.held() as lease:
        assert keeper.lease == lease
        first = await renewed_at()
        for _ in range(3):  # three renewals in a row, each seen in the database
            with trio.fail_after(60):
                while True:
                    seen = await renewed_at()
                    if seen > first:
                        break
                    await trio.sleep(0.02)
            first = seen
        await fenced_write(db, lease)
        assert keeper.lease is not None and keeper.lease.token == lease.token
    assert keeper.lease is None
    after = await acquire(db, "scan", "b", 5)  # released on exit: free at once
    assert after is not None and after.token == lease.token + 1


async def test_the_keeper_cancels_the_body_when_the_lease_is_lost(logged: Database) -> None:
    db = logged
    keeper = LeaseKeeper(db, "scan", "a", ttl_seconds=0.3)
    reached_the_end = False
    with pytest.raises(LeaseLost):
        async with keeper.held() as lease:
            # someone else takes it over (an operator, or a clock gone wrong)
            await execute(
                db,
                "update leases set holder = 'thief', fencing_token = fencing_token + 1",
            )
            await trio.sleep(5)
            reached_the_end = True
    assert not reached_the_end
    with pytest.raises(LeaseLost):
        await fenced_write(db, lease)
    (row,) = await fetch(db, "select holder from leases")
    assert row["holder"] == "thief"  # the keeper did not release what was not its own


async def test_the_keeper_waits_for_the_lease_and_passes_body_errors_on_unwrapped(
    db: Database,
) -> None:
    other = await acquire(db, "scan", "b", 30)
    assert other is not None
    keeper = LeaseKeeper(db, "scan", "a", ttl_seconds=0.3, poll_every=0.02)

    async def let_go() -> None:
        await trio.sleep(0.2)
        await release(db, other)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(let_go)
        with pytest.raises(KeyError, match="boom"):
            async with keeper.held() as lease:
                assert lease.token == 2
                raise KeyError("boom")
    again = await acquire(db, "scan", "b", 5)  # released despite the error
    assert again is not None and again.token == 3


async def test_cancelling_the_holder_from_outside_releases_the_lease(db: Database) -> None:
    keeper = LeaseKeeper(db, "scan", "a", ttl_seconds=5)
    with trio.move_on_after(0.2) as scope:
        async with keeper.held():
            await trio.sleep(5)
    assert scope.cancelled_caught
    after = await acquire(db, "scan", "b", 5)
    assert after is not None and after.token == 2


# -- racing processes ---------------------------------------------------------------------------


def exclusion_violations(log: Sequence[dict[str, Any]]) -> list[str]:
    """What in a log of holds shows two holders at once. An end that was never written (the
    holder lost the lease before it) counts as the start: nothing is claimed after that."""
    found = []
    holders_by_token: dict[int, set[str]] = {}
    for row in log:
        holders_by_token.setdefault(row["token"], set()).add(row["holder"])
    found += [f"token {t} had holders {h}" for t, h in holders_by_token.items() if len(h) > 1]
    ordered = sorted(log, key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(ordered):
        end = before["ended_at"] or before["started_at"]
        if not end < after["started_at"]:
            found.append(f"{before['holder']} held until {end}, {after['holder']} from ...")
        if after["token"] < before["token"]:
            found.append(f"token went back from {before['token']} to {after['token']}")
    return found


def test_the_exclusion_check_can_fail() -> None:
    t = [datetime.fromtimestamp(s) for s in range(10)]
    fine = [
        {"holder": "a", "token": 1, "started_at": t[0], "ended_at": t[1]},
        {"holder": "b", "token": 2, "started_at": t[2], "ended_at": None},
        {"holder": "a", "token": 3, "started_at": t[3], "ended_at": t[4]},
    ]
    assert exclusion_violations(fine) == []
    overlap = [*fine, {"holder": "b", "token": 4, "started_at": t[3], "ended_at": t[5]}]
    assert exclusion_violations(overlap)
    shared = [*fine, {"holder": "b", "token": 1, "started_at": t[6], "ended_at": t[7]}]
    assert exclusion_violations(shared)


class Racer:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, dsn: str, holder: str, *args: str) -> Racer:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(RACER), dsn, holder, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            with trio.fail_after(60):
                chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError("the racer process ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


async def test_racing_processes_never_hold_the_lease_together(
    logged: Database, database_dsn: str
) -> None:
    db = logged
    args = ["--holds", "20", "--ttl", "0.3", "--stall-at", "10", "--stall", "0.4"]
    racers = [await Racer.start(database_dsn, holder, *args) for holder in ("p1", "p2")]
    try:
        for r in racers:
            assert await r.line() == "ready"
        for r in racers:
            assert r.process.stdin is not None
            await r.process.stdin.send_all(b"go\n")
        summaries = [json.loads(await r.line()) for r in racers]
        for r in racers:
            with trio.fail_after(60):
                assert await r.process.wait() == 0
    finally:
        for r in racers:
            if r.process.returncode is None:
                r.process.kill()

    # each stalled past its ttl once: that end write was refused by the fence (a process
    # starved past its ttl elsewhere, on a busy machine, is refused there too)
    for summary in summaries:
        assert summary["holds"] == 20 and summary["stalled_refused"] == 1, summary
    log = await fetch(db, "select holder, token, started_at, ended_at from lease_log")
    assert len(log) == 40 - sum(s["unlogged"] for s in summaries)
    ended_refused = sum(s["refused"] - s["unlogged"] for s in summaries)
    assert sum(row["ended_at"] is None for row in log) == ended_refused
    assert exclusion_violations(log) == []
    by_token = sorted(log, key=lambda r: r["token"])
    handovers = sum(a["holder"] != b["holder"] for a, b in itertools.pairwise(by_token))
    assert handovers >= 1  # both held it, so it changed hands
