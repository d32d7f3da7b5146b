"""A VPN backend for a tiny panel whose API is idempotent by design.

``PUT /accounts/{name}`` creates the account or replaces its expiry and limits with the
absolute values sent, so ``ensure_account`` is one call and a retry adopts. The panel
also takes the traffic period: it resets the account's usage when the period it is sent
differs from the one it has, so a renewal restores a used-up account and a retry of the
same period resets nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from runtime.plugin_api.limits import BackendCapabilities
from runtime.plugin_api.peer import PeerClient
from runtime.plugin_api.vpn import Account, AccountSpec

from .settings import ExampleSettings


class TinyPanelBackend(PeerClient):
    peer = "tiny-panel"
    capabilities = BackendCapabilities(traffic_limit=True, device_limit=True)

    def __init__(self, settings: ExampleSettings, *, name: str = "example") -> None:
        token = settings.panel_token.get_secret_value()
        super().__init__(
            settings.panel_url,
            timeout=settings.timeout_seconds,
            secrets=[token],
            headers={"Authorization": f"Bearer {token}"},
        )
        self.name = name

    @staticmethod
    def _account(body: dict[str, object]) -> Account:
        expires = body.get("expires_at")
        allowed = int(str(body.get("traffic_bytes") or 0))
        limited = 0 < allowed <= int(str(body.get("used") or 0))
        return Account(
            name=str(body["name"]),
            reference=str(body["id"]),
            access_url=str(body["link"]),
            expires_at=datetime.fromtimestamp(float(str(expires)), UTC) if expires else None,
            enabled=bool(body["enabled"]) and not limited,
            limited=limited,
        )

    async def ensure_account(self, spec: AccountSpec) -> Account:
        response = await self.request(
            "PUT",
            f"/accounts/{spec.name}",
            json={
                "expires_at": int(spec.expires_at.timestamp()),
                "traffic_bytes": spec.traffic_limit_bytes or 0,
                "devices": spec.device_limit or 0,
                "enabled": True,
                "period": spec.period,
            },
        )
        return self._account(response.json())

    async def disable(self, name: str) -> None:
        await self.request("POST", f"/accounts/{name}/disable", accept=(404,))

    async def delete(self, name: str) -> None:
        await self.request("DELETE", f"/accounts/{name}", accept=(404,))

    async def get_account(self, name: str) -> Account | None:
        response = await self.request("GET", f"/accounts/{name}", accept=(404,))
        return None if response.status_code == 404 else self._account(response.json())

    async def health(self) -> None:
        await self.request("GET", "/health")
