"""Delays between restarts and the failure budget: pure bookkeeping, no I/O."""

from __future__ import annotations

import random
from collections import deque

from ._spec import Backoff, Budget


def backoff_delay(policy: Backoff, attempt: int, unit_random: float) -> float:
    """The delay before restart number ``attempt`` (0-based) given a draw from [0, 1).

    Jitter shrinks the capped delay, so the result lies in
    ``[capped * (1 - jitter), capped]`` and never exceeds ``policy.max``.
    """
    if attempt < 0:
        raise ValueError("attempt must not be negative")
    capped = policy.min
    for _ in range(attempt):
        if capped >= policy.max:
            break
        capped *= policy.multiplier
    capped = min(policy.max, capped)
    return capped * (1.0 - policy.jitter * unit_random)


class BackoffCounter:
    """Consecutive restarts of one actor, reset after a healthy run."""

    def __init__(self, policy: Backoff, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        delay = backoff_delay(self.policy, self.attempt, self._rng.random())
        self.attempt += 1
        return delay

    def note_run(self, healthy_seconds: float) -> None:
        """Forget earlier restarts when the last run lasted ``reset_after`` or longer."""
        if healthy_seconds >= self.policy.reset_after:
            self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0


class FailureBudget:
    """A sliding window of failure times; spending more than allowed exhausts it."""

    def __init__(self, policy: Budget) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()

    def spend(self, now: float) -> bool:
        """Record a failure at ``now``; True when the budget is now exhausted."""
        self._failures.append(now)
        horizon = now - self.policy.window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()
        return len(self._failures) > self.policy.max_failures

    def in_window(self, now: float) -> int:
        horizon = now - self.policy.window
        return sum(1 for t in self._failures if t > horizon)

    def reset(self) -> None:
        self._failures.clear()
