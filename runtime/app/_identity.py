"""The instance identity: stable across restarts, used by one live process at a time.

Lease holders and claim owners are named after ``service.instance_id``. With a stable id a
restarted process takes over what its killed predecessor held at once: its leases (a new
token fences the old tenure out) and its claims on outbox jobs and Telegram updates (due
again, no attempt spent), while another instance still waits for them to expire. So the id
must never be shared by two live processes: ``claim_instance`` takes the id's lock before
any actor starts and refuses (exit 78) when a live process holds it, and ``keep_instance``
holds it for the life of the process.

Unset, the id is ``<host name>/<systemd unit>`` (``vpn-1/vpnbot``), or ``<host name>/vpnbot``
outside a systemd service: two processes started by hand on one host share it, and the
second is refused with a message that names the setting.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from runtime.failures import classify
from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.storage import inbox, outbox
from runtime.storage.instances import PING_SECONDS, Holder, InstanceLock

from ._instance_name import default_instance_id as default_instance_id
from ._instance_name import systemd_unit as systemd_unit

SETTING = "service.instance_id"
PATIENCE_SECONDS = 40.0
"""How long a start waits for a holder that shows no sign of life (a session left by a
host that vanished ends within about 25 s) before it refuses."""

_log = get_logger("instance")


class InstanceInUse(Exception):
    """A live process holds this instance id."""


def _in_use(instance: str, holder: Holder | None, *, waited: float | None = None) -> str:
    who = holder.describe() if holder is not None else "a session we cannot inspect"
    how = (
        f"it showed no sign of life for {waited:.0f} s, but did not let go"
        if waited is not None
        else "it is alive"
    )
    return (
        f"instance id {instance!r} is in use by another process: {who}; {how}. Two live "
        f"processes must never share an instance id: give each its own {SETTING} (unset, "
        "it is <host name>/<systemd unit>, the same for processes started by hand on one "
        "host)"
    )


def _alive(now: Holder, before: Holder) -> bool:
    """Whether the holder showed a sign of life since ``before``: a new session took the
    lock, or the session was active (a ping) in between."""
    if now.backend_pid != before.backend_pid:
        return True
    return now.last_active is not None and now.last_active != before.last_active


async def claim_instance(
    lock: InstanceLock, *, patience: float = PATIENCE_SECONDS, poll: float = 0.25
) -> None:
    """Take the instance id's lock, or raise ``InstanceInUse``.

    A free lock is taken at once (a killed predecessor's session is gone). A taken one is
    watched: a holder that shows activity is alive, and the start is refused at once; one
    that stays silent for ``patience`` seconds (a vanished host's session not ended yet)
    is refused too, after a warning.
    """
    first: Holder | None = None
    deadline = trio.current_time() + patience
    while True:
        if await lock.try_acquire():
            if first is not None:
                _log.info("instance id free again: taken", instance=lock.instance_id)
            return
        holder = await lock.holder()
        if holder is not None and first is not None and _alive(holder, first):
            raise InstanceInUse(_in_use(lock.instance_id, holder))
        if first is None and holder is not None:
            first = holder
            _log.warning(
                "instance id in use: waiting to see whether its holder is alive",
                instance=lock.instance_id,
                holder=holder.describe(),
                setting=SETTING,
            )
        if trio.current_time() >= deadline:
            raise InstanceInUse(_in_use(lock.instance_id, first, waited=patience))
        await trio.sleep(poll)


async def keep_instance(
    lock: InstanceLock, on_lost: Callable[[str], None], *, every: float = PING_SECONDS
) -> None:
    """Hold the id for the life of the process: ping its session, and when the session is
    gone (a database restart, a network cut) take the lock again. Should another live
    process have taken it meanwhile, ``on_lost`` is called with why, and this returns."""
    retries = 0
    while True:
        await trio.sleep(every)
        if lock.held:
            try:
                await lock.ping()
                continue
            except Exception as exc:
                _log.warning(
                    "instance lock session lost: taking the lock again",
                    instance=lock.instance_id,
                    error=repr(exc),
                    outcome="degraded",
                )
        try:
            await claim_instance(lock)
        except InstanceInUse as exc:
            on_lost(str(exc))
            return
        except Exception as exc:  # the database is away: try again on the next round
            retries += 1
            if retries == 1:  # once per outage: the database actor reports the rest
                failure = classify(exc)
                _log.warning(
                    "instance lock not taken yet: trying again until the database answers",
                    instance=lock.instance_id,
                    failure_type=failure.type.value,
                    error=failure.message,
                    outcome="degraded",
                )
        else:
            _log.info(
                "instance lock held again",
                instance=lock.instance_id,
                retries=retries,
                outcome="success",
            )
            retries = 0


async def take_back(services: Services) -> tuple[outbox.TakenBack, int]:
    """At start, with the id held: take back the claims this instance's dead predecessor
    left (outbox jobs, Telegram updates), so they run now rather than when they expire."""
    db = services.db
    prefix = services.owner_prefix
    jobs = await outbox.take_back(db, owner_prefix=prefix)
    updates = await inbox.take_back(db, owner_prefix=prefix)
    if jobs.jobs or updates:
        _log.info(
            "claims of the previous run taken back",
            operation="instance.take_back",
            outcome="success",
            jobs=jobs.jobs,
            jobs_started=jobs.lost,
            updates=updates,
        )
    return jobs, updates
