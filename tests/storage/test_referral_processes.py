"""Referral rewards across processes: two processes and the test itself racing for the
same jobs grant each reward once, and a process killed with SIGKILL after the payment
committed (or after the rewards, before its job completed) leaves exactly one reward
once another process has run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from runtime.storage import Database, job_kinds
from runtime.storage import referrals as store
from tests.storage.referral_proc import RULES
from tests.storage.referral_setup import balance, chain, pay, referral_entries, rows, value
from tests.storage.test_outbox import Claimer

ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("referral_proc.py")


class Proc(Claimer):
    """A referral_proc.py process, read line by line (as the outbox tests' claimers)."""

    @classmethod
    async def launch(cls, dsn: str, owner: str, mode: str, *args: str) -> Proc:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(PROC), dsn, owner, mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        proc = cls(process)
        assert await proc.line() == "ready"
        return proc

    async def stop(self) -> None:
        self.kill()
        with trio.fail_after(60):
            await self.process.wait()


async def test_two_processes_and_thirty_racers_grant_each_reward_once(
    db: Database, database_dsn: str
) -> None:
    await chain(db, 1, 2, 3)
    payments = [await pay(db, 3, amount=1000) for _ in range(30)]
    procs = [await Proc.launch(database_dsn, f"proc-{n}", "run") for n in range(2)]
    try:
        for proc in procs:
            await proc.go()
        async with trio.open_nursery() as nursery:
            for payment in payments:  # the same jobs' work, run once more by hand
                nursery.start_soon(store.reward_payment, db, payment, RULES)
        ran = [line for proc in procs for line in await proc.results()]
    finally:
        for proc in procs:
            await proc.stop()
    assert len(ran) == 30  # every job completed once, by one of the processes
    assert await balance(db, 2) == 30 * 100 and await balance(db, 1) == 30 * 100
    entries = await referral_entries(db)
    assert len(entries) == 60 and len({e[0] for e in entries}) == 60
    notes = await value(db, "select count(*) from outbox where dedup_key like 'notify:referral:%'")
    assert notes == 60


async def _one_reward_each(db: Database, payment: str) -> None:
    assert await referral_entries(db) == [
        (f"referral:{payment}:1", 2, None, 100),
        (f"referral:{payment}:2", 1, None, 100),
    ]
    assert await balance(db, 2) == 100 and await balance(db, 1) == 100
    jobs = await rows(db, "select status from outbox where kind = $1", store.REWARD)
    assert jobs == [{"status": "done"}]
    notes = await rows(
        db, "select dedup_key from outbox where kind = $1 order by dedup_key", job_kinds.NOTIFY
    )
    assert [n["dedup_key"] for n in notes if "referral" in n["dedup_key"]] == [
        f"notify:referral:{payment}:1",
        f"notify:referral:{payment}:2",
    ]


async def _rescue(dsn: str) -> list[dict[str, Any]]:
    rescuer = await Proc.launch(dsn, "rescuer", "run")
    try:
        await rescuer.go()
        return await rescuer.results()
    finally:
        await rescuer.stop()


async def test_a_process_killed_right_after_the_payment_committed_rewards_once_after(
    db: Database, database_dsn: str
) -> None:
    await chain(db, 1, 2, 3)
    victim = await Proc.launch(database_dsn, "victim", "pay-and-die", "--payer", "3")
    try:
        await victim.go()
        payment = await victim.line()
        with trio.fail_after(60):
            assert await victim.process.wait() == -signal.SIGKILL
    finally:
        await victim.stop()
    assert await value(db, "select status from payments where id = $1::uuid", payment) == (
        "finalized"
    )
    assert await referral_entries(db) == []
    assert [line["granted"] for line in await _rescue(database_dsn)] == [2]
    await _one_reward_each(db, payment)


async def test_a_worker_killed_after_claiming_leaves_the_rewards_to_the_next(
    db: Database, database_dsn: str
) -> None:
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3, amount=1000)
    victim = await Proc.launch(database_dsn, "victim", "hang", "--ttl", "1")
    try:
        await victim.go()
        assert len(json.loads(await victim.line())["claimed"]) == 1
    finally:
        await victim.stop()
    assert await referral_entries(db) == []
    assert [line["granted"] for line in await _rescue(database_dsn)] == [2]
    await _one_reward_each(db, payment)


async def test_a_worker_killed_after_the_rewards_before_its_job_completed_grants_no_more(
    db: Database, database_dsn: str
) -> None:
    await chain(db, 1, 2, 3)
    payment = await pay(db, 3, amount=1000)
    victim = await Proc.launch(database_dsn, "victim", "grant-hang", "--ttl", "1")
    try:
        await victim.go()
        assert json.loads(await victim.line()) == {"granted": 2}
    finally:
        await victim.stop()
    assert [line["granted"] for line in await _rescue(database_dsn)] == [0]
    await _one_reward_each(db, payment)
