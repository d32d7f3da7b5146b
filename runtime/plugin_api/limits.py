"""What a VPN backend can enforce and report: traffic and device limits, usage, devices.

A backend declares its ``capabilities`` (a ``BackendCapabilities``) as an attribute. The
catalog reads it when the configuration is checked: a plan that limits traffic or devices
on a backend that cannot enforce that limit is refused at start, naming the plan and the
limit, instead of being sold with a promise the panel does not keep. A backend without
the attribute declares nothing: it may serve unlimited plans only.

- ``traffic_limit``: ``AccountSpec.traffic_limit_bytes`` is set on the panel, which cuts
  the account off when the period's traffic is used up.
- ``device_limit``: ``AccountSpec.device_limit`` is set on the panel (simultaneous
  connections, IP addresses, or hardware ids, whatever the panel counts).
- ``usage``: ``get_account`` fills ``Account.used_bytes`` (and ``traffic_limit_bytes``)
  with the panel's figures for the current period; the bot shows them and the traffic
  reminders read them.
- ``devices``: the backend also implements ``DeviceManager``: users list the devices the
  panel registered for their account and delete them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    traffic_limit: bool = False
    device_limit: bool = False
    usage: bool = False
    devices: bool = False


NO_CAPABILITIES = BackendCapabilities()


def capabilities_of(backend: object) -> BackendCapabilities:
    """What ``backend`` declares; nothing when it declares nothing (or something else)."""
    found = getattr(backend, "capabilities", None)
    return found if isinstance(found, BackendCapabilities) else NO_CAPABILITIES


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    """The panel's id of the device (a hardware id): opaque, possibly long."""
    label: str
    """What the user recognises it by (platform, model), as the panel reports it."""
    added_at: datetime | None = None


@runtime_checkable
class DeviceManager(Protocol):
    """A backend whose panel keeps the devices of an account (``capabilities.devices``)."""

    async def devices(self, name: str) -> list[Device]:
        """The devices registered for account ``name``; empty when it has none or does
        not exist."""
        ...

    async def delete_device(self, name: str, device_id: str) -> bool:
        """Forget one device of account ``name``, which may then register again (counting
        against the limit anew). False when there was no such device: not an error."""
        ...
