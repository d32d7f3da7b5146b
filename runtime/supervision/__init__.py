"""Supervision core: actors, restart policies, failure budgets, graceful stop, sd_notify.

It knows nothing of Telegram, VPNs, payments or databases and imports only trio.
"""

from ._backoff import BackoffCounter, FailureBudget, backoff_delay
from ._context import ActorContext
from ._loop_worker import Iteration, loop_worker
from ._observer import SupervisorObserver
from ._sdnotify import SdNotifier
from ._spec import ActorSpec, Backoff, Budget, OnExhausted, Restart, RunFunction
from ._status import ActorState, ActorStatus, FailureRecord, SystemState, system_state
from ._supervisor import EX_OK, EX_TEMPFAIL, Supervisor, unwrap_group
from ._wakeup import Wakeup, wait_any

__all__ = [
    "EX_OK",
    "EX_TEMPFAIL",
    "ActorContext",
    "ActorSpec",
    "ActorState",
    "ActorStatus",
    "Backoff",
    "BackoffCounter",
    "Budget",
    "FailureBudget",
    "FailureRecord",
    "Iteration",
    "OnExhausted",
    "Restart",
    "RunFunction",
    "SdNotifier",
    "Supervisor",
    "SupervisorObserver",
    "SystemState",
    "Wakeup",
    "backoff_delay",
    "loop_worker",
    "system_state",
    "unwrap_group",
    "wait_any",
]
