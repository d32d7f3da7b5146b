"""PostgreSQL notifications that wake workers: one listening session per process.

``migrations/0007_wakeups.sql`` sends a notification on ``CHANNEL`` when work is added
(its payload names the work: an outbox job kind, ``payment.invoiced``); PostgreSQL sends
it at commit, so a transaction that rolls back wakes nobody. ``Listener`` is the session
that receives them: it runs outside the pool (a pooled connection is reset and shared),
and hands each payload to trio as it arrives.

asyncpg calls a listener on the asyncio side. The callback hands the payload over with the
trio token captured when the listener opened (``TrioToken.run_sync_soon``), which works
whether asyncio runs in trio's thread or in one of its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import asyncpg
import trio

from runtime.bridge import run_asyncio
from runtime.failures import DATABASE, InfraError
from runtime.supervision import wait_any

from ._database import Database, close_session
from .instances import KEEPALIVE

CHANNEL = "vpnbot_wakeup"

Deliver = Callable[[str], None]
"""Called in trio with each notification's payload."""


class Listener:
    """A session listening on ``CHANNEL``.

    ``open`` connects and subscribes; from then on ``deliver`` gets every payload. ``watch``
    pings the session every ``ping_every`` seconds (a network cut leaves a silent socket
    that only a query notices) and raises ``InfraError`` the moment the session ends or a
    ping fails or hangs. ``close`` ends the session.
    """

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], lost: trio.Event) -> None:
        self._conn = conn
        self._lost = lost

    @classmethod
    async def open(cls, db: Database, deliver: Deliver) -> Listener:
        token = trio.lowlevel.current_trio_token()
        lost = trio.Event()

        def hand_over(fn: Callable[..., Any], *args: Any) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # trio ended: nobody to wake
                token.run_sync_soon(fn, *args)

        def on_notification(conn: object, pid: int, channel: str, payload: object) -> None:
            hand_over(deliver, str(payload))

        def on_termination(conn: object) -> None:
            hand_over(lost.set)

        label = f"vpnbot wakeups pid {os.getpid()}@{socket.gethostname()}"[:63]
        conn = await db.open_session(server_settings={"application_name": label, **KEEPALIVE})

        async def subscribe() -> None:
            conn.add_termination_listener(on_termination)
            await conn.add_listener(CHANNEL, on_notification)

        try:
            await run_asyncio(subscribe)
        except BaseException:
            await close_session(conn)
            raise
        return cls(conn, lost)

    async def watch(self, *, stop: trio.Event, ping_every: float, ping_timeout: float) -> None:
        """Keep watching the session until ``stop`` is set (return) or it is lost (raise
        ``InfraError``)."""
        while not stop.is_set():
            with trio.move_on_after(ping_every):
                await wait_any(self._lost, stop)
            if stop.is_set():
                return
            if self._lost.is_set() or self._conn.is_closed():
                raise InfraError("the wake-up listener's session ended", dependency=DATABASE)
            try:
                with trio.fail_after(ping_timeout):
                    await run_asyncio(self._conn.fetchval, "select 1")
            except (trio.TooSlowError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                raise InfraError(
                    f"the wake-up listener's session does not answer: {e!r}", dependency=DATABASE
                ) from e

    async def close(self) -> None:
        await close_session(self._conn)
