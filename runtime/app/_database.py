"""Getting a usable database before any actor starts: embedded or configured, migrated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from runtime.config import DatabaseSettings
from runtime.failures import DATABASE, classify
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.storage import (
    Database,
    MigrationError,
    apply_migrations,
    pending_migrations,
)
from runtime.supervision import ActorContext, ActorSpec, Backoff, Budget, loop_worker

from ._early import EarlyStart
from .exit_codes import EX_CONFIG, EX_TEMPFAIL

if TYPE_CHECKING:
    from runtime.storage import EmbeddedPostgres

DATABASE_ACTOR = "database"


class StartupError(Exception):
    """The service cannot start; ``exit_code`` tells systemd whether trying again helps."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class OpenDatabase:
    db: Database
    embedded: EmbeddedPostgres | None

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.db.close()
            finally:
                if self.embedded is not None:
                    await self.embedded.stop()


async def connect(settings: DatabaseSettings, *, early: EarlyStart | None = None) -> OpenDatabase:
    """Start the embedded server when no DSN is configured (or take over the one ``early``
    started), then open the pool. A cancellation stops a server started here."""
    log = get_logger("storage")
    embedded = None
    if settings.dsn is None:
        data_dir = Path(settings.data_dir)
        try:
            if early is not None and early.server_for(data_dir) is not None:
                embedded = await early.take_server()
            else:
                from runtime.storage import EmbeddedPostgres  # not with a configured DSN

                embedded = EmbeddedPostgres(data_dir)
                await embedded.start()
            dsn = embedded.dsn()
        except Exception as exc:
            raise StartupError(f"embedded PostgreSQL failed to start: {exc}", EX_TEMPFAIL) from exc
        log.info("embedded PostgreSQL started", data_dir=str(embedded.data_dir))
    else:
        dsn = settings.dsn.get_secret_value()
    try:
        db = await Database.connect(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            connect_timeout=settings.connect_timeout_seconds,
            command_timeout=settings.command_timeout_seconds,
        )
    except BaseException as exc:
        if embedded is not None:
            with trio.CancelScope(shield=True):
                await embedded.stop()
        if not isinstance(exc, Exception):
            raise
        failure = classify(exc)
        code = EX_TEMPFAIL if failure.transient else EX_CONFIG
        reason = "unreachable" if failure.transient else "refused the connection"
        raise StartupError(
            f"database {reason}: {failure.exception_type}: {failure.message}", code
        ) from exc
    return OpenDatabase(db, embedded)


async def ensure_schema(
    opened: OpenDatabase, *, auto_migrate: bool, progress: Callable[[str], None] | None = None
) -> None:
    """Refuse a database that is behind unless migrating is allowed (always for embedded).

    ``progress`` is told before migrations are applied."""
    log = get_logger("storage")
    try:
        pending = await pending_migrations(opened.db)
        if not pending:
            return
        if not (auto_migrate or opened.embedded is not None):
            names = ", ".join(m.label for m in pending)
            raise StartupError(
                f"the database is behind by {len(pending)} migration(s) ({names}): "
                "run `vpnbot migrate`, or set database.auto_migrate = true",
                EX_CONFIG,
            )
        if progress is not None:
            progress(f"migrating ({len(pending)} migration(s))…")
        applied = await apply_migrations(opened.db)
        log.info("migrations applied", migrations=[m.label for m in applied])
    except MigrationError as exc:
        raise StartupError(f"database schema: {exc}", EX_CONFIG) from exc


def database_probe(services: Services, *, timeout: float = 5.0) -> ActorSpec:
    """An actor that pings the database; failures mark the system degraded, never park it.

    It is the database's probe: while it fails, the actors whose failures blame the database
    are alerted on under its alert (``degraded:database``), and each ping that succeeds
    clears their degradation at once, however long they sleep before their next try.
    """

    async def ping(ctx: ActorContext) -> None:
        with trio.fail_after(timeout):
            await services.db.ping()

    return ActorSpec(
        DATABASE_ACTOR,
        loop_worker(ping, interval=15.0),
        min_sleep_on_failure=2.0,
        backoff=Backoff(min=1, max=30),
        budget=Budget(max_failures=1_000_000, window=60),
        probes=DATABASE,
    )
