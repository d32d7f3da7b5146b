"""Used traffic as the panels report it, cached: a flood of "My subscription" presses asks
a panel once per account and TTL, and a panel that is down, slow or talking nonsense
shows the last good figure, or "unknown", never an error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import trio

from runtime.logs import get_logger, log_failure
from runtime.plugin_api.limits import capabilities_of
from runtime.plugin_api.vpn import VpnBackend

MAX_BYTES = 2**60
"""More than any panel counts (an exbibyte): a larger figure is not believed."""
MAX_ENTRIES = 100_000
"""The cache (a figure and a lock per account) forgets everything when it grows past this."""

_log = get_logger("traffic")


@dataclass(frozen=True, slots=True)
class Usage:
    used_bytes: int
    at: float
    """``trio.current_time()`` of the reading."""


def believable(value: object) -> int | None:
    """A panel's byte count, or None when it is no count at all (negative, huge, a
    string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_BYTES else None


class UsageReader:
    def __init__(self, backends: Mapping[str, VpnBackend], *, ttl: float, timeout: float) -> None:
        self._backends = backends
        self._ttl = ttl
        self._timeout = timeout
        self._cache: dict[tuple[str, str], Usage] = {}
        self._locks: dict[tuple[str, str], trio.Lock] = {}

    def supported(self, backend: str) -> bool:
        found = self._backends.get(backend)
        return found is not None and capabilities_of(found).usage

    async def used(self, backend: str, account: str) -> Usage | None:
        """The account's usage no older than the TTL if the panel answers in time, else
        the last good one, else None."""
        key = (backend, account)
        cached = self._cache.get(key)
        if cached is not None and trio.current_time() - cached.at < self._ttl:
            return cached
        if len(self._locks) >= MAX_ENTRIES:
            self._locks.clear()  # a lock held now is kept by its holders; harmless
            self._cache.clear()
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:  # one panel call per account at a time; the rest read its result
            cached = self._cache.get(key)
            if cached is not None and trio.current_time() - cached.at < self._ttl:
                return cached
            fresh = await self._read(backend, account)
            if fresh is not None:
                self._cache[key] = fresh
                return fresh
            return cached

    async def _read(self, backend: str, account: str) -> Usage | None:
        found = self._backends.get(backend)
        if found is None or not capabilities_of(found).usage:
            return None
        with trio.move_on_after(self._timeout) as scope:
            try:
                answer = await found.get_account(account)
            except Exception as exc:  # a panel's failure is data here: shown as unknown
                log_failure(_log, exc, operation="traffic.usage", backend=backend)
                return None
        if scope.cancelled_caught:
            _log.warning(
                "the panel did not answer in time",
                operation="traffic.usage",
                backend=backend,
                outcome="degraded",
            )
            return None
        used = believable(answer.used_bytes) if answer is not None else None
        if used is None:
            return None
        return Usage(used, trio.current_time())
