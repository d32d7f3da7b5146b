"""The background workers, each a supervised actor built on ``loop_worker``.

``worker_actors(services)`` returns their specs, for the supervisor's tree:

==========================  ========  =====================  ==================================
actor                       interval  min. sleep on failure  what
==========================  ========  =====================  ==================================
``wakeup_listener``         -         -                      one PostgreSQL session listening
                                                             for committed work; wakes the
                                                             workers below (``[wakeups]``)
``activation_worker``       1 s (w)   10 s                   VPN panel calls: activations, then
                                                             revocations and deletions
                                                             (outbox jobs)
``fast_expiry_cleanup``     60 s (e)  10 s                   lapsed subscriptions expire; their
                                                             revocation is queued, and the
                                                             deletion of accounts revoked
                                                             past their retention
``crypto_payment_watcher``  10 s (w)  15 s                   open invoices polled, paid ones
                                                             credited; stale intents expired
``auto_renewal``            300 s     300 s                  renewals from the balance
``trial_notifications``     120 s     60 s                   trial reminders
``expiry_notifications``    120 s     60 s                   paid-subscription reminders
``traffic_notifications``   600 s     60 s                   traffic reminders, once per
                                                             period and threshold
``notifier``                1 s (w)   5 s                    every message to users
``reconciliation``          600 s     300 s                  missed payments found and credited
``referral_rewards``        5 s (w)   10 s                   referral rewards of payments, and
                                                             their clawback on refunds
==========================  ========  =====================  ==================================

(w) Woken by committed work (``_wakeups``): a payment's activation and messages start at
once. While the listener is connected they look on their own only at
``[wakeups] fallback_interval_seconds`` (30 s), or when work is due by the clock (a retry
after its backoff); the interval shown is their polling while it is not (and with
``[wakeups] enabled = false``). The payment watcher polls every 10 s while invoices are
open. (e) Sleeps until the next subscription ends, at most this long.

Every iteration is one boundary (its own correlation id); a failed one is logged with
its failure type and followed by at least the minimum sleep. Workers are not critical
(one parked makes the service degraded, not unavailable) and each has a failure budget
that parks it and tries again after a cool-down. ``[actors.<name>]`` overrides any of it
(``interval_seconds``, ``min_sleep_on_failure_seconds``, budgets, ``enabled = false``).

Work is claimed from PostgreSQL (outbox claims, SKIP LOCKED scans, scan cursors), so any
number of processes run the same workers on one database; work that talks to a peer once
for everyone (polling a provider, sending at a global rate) holds a lease instead. An
idle worker holds no lease: it takes it again when work is due.

The notifier needs ``[telegram] token``; without one it is left out (and logged).
"""

from __future__ import annotations

from runtime.logs import get_logger
from runtime.plugin_api import Services
from runtime.supervision import ActorSpec

from . import (
    _wakeups,
    activation,
    auto_renewal,
    expiry_cleanup,
    notifier,
    payment_watcher,
    reconciliation,
    referral_rewards,
    reminders,
    traffic_reminders,
)
from ._wakeups import Wakeups, wakeups_of

NAMES = (
    _wakeups.LISTENER,
    activation.NAME,
    expiry_cleanup.NAME,
    payment_watcher.NAME,
    auto_renewal.NAME,
    reminders.TRIAL,
    reminders.EXPIRY,
    traffic_reminders.NAME,
    reconciliation.NAME,
    referral_rewards.NAME,
    notifier.NAME,
)


def worker_actors(services: Services) -> list[ActorSpec]:
    """The workers' actor specs, in start order (the wake-up listener first, the notifier
    last: it stops first)."""
    specs = []
    if services.settings.wakeups.enabled:
        specs.append(_wakeups.listener_spec(services))
    specs += [
        activation.spec(services),
        expiry_cleanup.spec(services),
        payment_watcher.spec(services),
        auto_renewal.spec(services),
        reminders.trial_spec(services),
        reminders.expiry_spec(services),
        traffic_reminders.spec(services),
        reconciliation.spec(services),
        referral_rewards.spec(services),
    ]
    if services.settings.telegram.token is not None:
        specs.append(notifier.spec(services))
    else:
        get_logger("workers").warning(
            "no [telegram] token: the notifier is not started, messages wait in the outbox",
            operation="workers.assemble",
            outcome="skipped",
        )
    return specs


__all__ = ["NAMES", "Wakeups", "wakeups_of", "worker_actors"]
