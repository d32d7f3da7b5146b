"""The Bot API payment methods this plugin calls, over httpx on trio.

The bot token is part of every URL (``{api_base}/bot<token>/<method>``): it is registered
as a secret, so ``PeerClient`` scrubs it from every message, and nothing here logs a URL.
Errors are ``{"ok": false, "error_code": 400, "description": "Bad Request: ..."}`` with
the same HTTP status; a 429 carries ``Retry-After`` and ``parameters.retry_after``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from runtime.failures import DependencyError
from runtime.plugin_api.peer import PeerClient

PAGE = 100
"""``getStarTransactions`` returns at most 100 transactions per call."""


class BotApiPaymentsClient(PeerClient):
    peer = "telegram"

    def __init__(
        self,
        token: str,
        *,
        api_base: str = "https://api.telegram.org",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        if not token:
            raise ValueError("a Bot API client needs the bot token")
        super().__init__(
            f"{api_base.rstrip('/')}/bot{token}/",
            timeout=timeout,
            secrets=[token],
            transport=transport,
            verify=verify,
        )
        self._known_count = 0

    def __repr__(self) -> str:
        return "BotApiPaymentsClient()"

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        response = await self.request("POST", method, json=dict(params or {}))
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            raise DependencyError(f"{self.peer}: {method} answered with something not JSON")
        if envelope["ok"] is True and "result" in envelope:
            return envelope["result"]
        code = envelope.get("error_code")
        transient = code == 429 or (isinstance(code, int) and code >= 500)
        raise DependencyError(
            self.scrub(f"{self.peer}: {method}: {_description(envelope)}"),
            transient=transient,
            retry_after=_retry_after(envelope) if transient else None,
        )

    def status_error(self, response: httpx.Response) -> DependencyError:
        error = super().status_error(response)
        if error.transient and error.retry_after is None:
            with contextlib.suppress(ValueError):
                error.retry_after = _retry_after(response.json())
        return error

    # -- methods ----------------------------------------------------------------------

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        await self.call(
            "refundStarPayment", {"user_id": user_id, "telegram_payment_charge_id": charge_id}
        )

    async def star_transactions(self, offset: int, limit: int = PAGE) -> list[dict[str, Any]]:
        result = await self.call("getStarTransactions", {"offset": offset, "limit": limit})
        items = result.get("transactions") if isinstance(result, Mapping) else None
        if not isinstance(items, list):
            raise DependencyError(f"{self.peer}: getStarTransactions answered without a list")
        return [item for item in items if isinstance(item, dict)]

    async def recent_star_transactions(self, since: datetime) -> list[dict[str, Any]]:
        """The bot's Star transactions from ``since`` on (and up to a page before it).

        The Bot API lists them oldest first, by offset, and only ever appends; so this
        finds how many there are, then reads pages backwards until one starts before
        ``since``. A steady state costs one call plus one per page of recent history.
        """
        end = await self.transaction_count()
        found: list[dict[str, Any]] = []
        while end > 0:
            start = max(0, end - PAGE)
            page = await self.star_transactions(start, end - start)
            found[:0] = page
            if not page or _date(page[0]) < since:
                break
            end = start
        return found

    async def transaction_count(self) -> int:
        """How many Star transactions the bot has.

        The count learnt by an earlier call is a lower bound (transactions are never
        removed), so the search starts there: one call when nothing or little is new,
        an exponential probe and a bisection otherwise.
        """
        low = self._known_count  # every offset below `low` holds a transaction
        page = await self.star_transactions(low, PAGE)
        if len(page) < PAGE:
            count = low + len(page)
        else:
            low += PAGE
            step = PAGE
            high = low + step
            while await self.star_transactions(high, 1):
                low, step = high + 1, step * 2
                high = low + step
            while low < high:  # `high` holds none; find the first offset without one
                middle = (low + high) // 2
                if await self.star_transactions(middle, 1):
                    low = middle + 1
                else:
                    high = middle
            count = low
        self._known_count = count
        return count


def _description(envelope: Mapping[str, Any]) -> str:
    description = envelope.get("description")
    return str(description)[:200] if description else f"error {envelope.get('error_code')}"


def _retry_after(envelope: object) -> float | None:
    if not isinstance(envelope, Mapping):
        return None
    parameters = envelope.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _date(transaction: Mapping[str, Any]) -> datetime:
    value = transaction.get("date")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return datetime.max.replace(tzinfo=UTC)
