"""What the runtime hands to plugins: shared services, some of which arrive later.

Hooks run while the runtime is assembled, before the database is connected; a plugin
keeps the ``Services`` object and reads ``db`` when its actors run.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.access import Access
    from runtime.alerts import AlertPipeline
    from runtime.billing import Billing
    from runtime.config import Settings
    from runtime.metrics import Metrics
    from runtime.storage import Database


class ServiceNotReady(RuntimeError):
    """A service was used before the runtime provided it (e.g. the database at load time)."""


class Services:
    """What every actor and plugin shares.

    ``instance_id`` names this instance among several sharing one database, the same
    after a restart, and never used by two live processes at once (the runtime holds it
    for the life of the process). Name what you hold after it: ``lease_holder(role)`` for
    leases, so that a restart takes its own leases over at once; ``claim_owner(role)`` for
    outbox and inbox claims, so that a restart takes its predecessor's claims back.
    """

    def __init__(self, settings: Settings, metrics: Metrics, *, instance_id: str) -> None:
        if not instance_id or ":" in instance_id:
            raise ValueError("an instance id is non-empty and has no ':'")
        self.settings = settings
        self.metrics = metrics
        self.instance_id = instance_id
        self._alerts: AlertPipeline | None = None
        self._db: Database | None = None
        self._billing: Billing | None = None
        self._access: Access | None = None

    def lease_holder(self, role: str) -> str:
        """The holder name of ``role``'s leases: stable across restarts of the instance."""
        return f"{self.instance_id}:{role}"

    def claim_owner(self, role: str) -> str:
        """An owner name for one start of ``role``'s claims: the instance's prefix, then a
        tag that is new on every call (so a late outcome of an earlier start never counts
        for a later one)."""
        return f"{self.owner_prefix}{role}:{secrets.token_hex(4)}"

    @property
    def owner_prefix(self) -> str:
        """What every claim owner and lease holder of this instance starts with."""
        return f"{self.instance_id}:"

    @property
    def alerts(self) -> AlertPipeline:
        if self._alerts is None:
            raise ServiceNotReady("alerts are wired after the plugins load; use them at run time")
        return self._alerts

    @property
    def db(self) -> Database:
        if self._db is None:
            raise ServiceNotReady("the database is connected when the runtime starts")
        return self._db

    @property
    def billing(self) -> Billing:
        if self._billing is None:
            raise ServiceNotReady("billing starts with the database")
        return self._billing

    @property
    def access(self) -> Access:
        if self._access is None:
            raise ServiceNotReady("access starts with the database")
        return self._access

    def provide_domain(self, billing: Billing | None, access: Access | None) -> None:
        self._billing = billing
        self._access = access

    def provide_alerts(self, alerts: AlertPipeline) -> None:
        self._alerts = alerts

    def provide_db(self, db: Database | None) -> None:
        self._db = db
