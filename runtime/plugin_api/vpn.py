"""The VPN-backend extension point.

Every call is idempotent and absolute: accounts have deterministic names chosen by the
core, and expiry and limits are set to absolute values. A retry after a crash therefore
adopts what the crashed attempt created instead of creating a second account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class AccountSpec:
    name: str
    """Deterministic, lowercase ``[a-z0-9_]``, at most 32 characters: the same subscription
    always gets the same name."""
    expires_at: datetime
    """Absolute, timezone-aware."""
    telegram_id: int
    traffic_limit_bytes: int | None = None
    """None: unlimited."""
    device_limit: int | None = None
    """None: unlimited. Backends without such a limit ignore it."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    reference: str
    """The panel's own id of the account (a numeric id, a UUID, the name itself)."""
    access_url: str
    """What the user imports into a client: a subscription URL or an ``ss://`` key."""
    expires_at: datetime | None
    enabled: bool


@runtime_checkable
class VpnBackend(Protocol):
    """A VPN panel. Methods raise ``DependencyError`` when the panel fails (transient for
    network errors, 5xx and 429; permanent for other 4xx), never with a secret in it."""

    name: str

    async def ensure_account(self, spec: AccountSpec) -> Account:
        """Create the account, or adopt the one with this name, and set its expiry and
        limits to the spec's absolute values; enables it. Calling it twice gives one state."""
        ...

    async def disable(self, name: str) -> None:
        """Stop access without forgetting the account. A missing account is not an error."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the account. A missing account is not an error."""
        ...

    async def get_account(self, name: str) -> Account | None: ...

    async def health(self) -> None:
        """Raise ``DependencyError`` when the panel cannot serve."""
        ...
