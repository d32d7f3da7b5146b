from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from runtime.app import base_url, build_runtime, serve
from runtime.app._early import EarlyStart
from runtime.app._ports import BoundPorts
from runtime.config import Settings
from runtime.logs import get_logger, log_failure
from runtime.storage import Database, referrals
from runtime.storage.update_ids import highest_seen
from runtime.testing.fakes._base import FakePeer
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.heleket import FakeHeleket
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.fakes.yookassa import FakeYooKassa
from runtime.testing.telegram import SANDBOX_RETENTION, TelegramEmulator
from runtime.web import HttpEndpoint

from ._banner import announce_when_served
from ._icon import favicon_route
from ._state import (
    Kept,
    cryptobot_state_path,
    keep_saved,
    load_state,
    marzban_state_path,
    telegram_state_path,
)

CRYPTOBOT_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
PANEL_PASSWORD = "sandbox-panel-password"
CARD_TOKEN = "284685063:TEST:sandbox-card-provider"
YOOKASSA_SHOP, YOOKASSA_SECRET = "100500", "test_SandboxYooKassaSecretKey"
SANDBOX_CODES: dict[str, dict[str, Any]] = {
    "WELCOME": {"kind": "days", "value": 7, "new_users_only": True},
    "SAVE20": {"kind": "next_discount", "value": 20, "max_activations": 100},
    "GIFT50": {"kind": "balance", "value": 5000},
}
"""Promo codes a sandbox starts with (``/promo WELCOME``), unless the configuration names
its own."""
FIRST_USER_ID = 100000001
"""The emulator's first simulated user: the sandbox makes them the admin."""


@dataclass(frozen=True)
class SandboxPorts:
    """The emulator's port, and the fake peers' beside it (stable, so the links in the
    chats still open after a restart; 0 when the emulator's is 0). The runtime's own
    listeners come from ``[http]`` as always."""

    telegram: int = 8081

    @property
    def panel(self) -> int:
        return _beside(self.telegram, 1)

    @property
    def cryptobot(self) -> int:
        return _beside(self.telegram, 2)

    @property
    def yookassa(self) -> int:
        return _beside(self.telegram, 3)

    @property
    def heleket(self) -> int:
        return _beside(self.telegram, 4)


def _beside(port: int, offset: int) -> int:
    return port + offset if port and port + offset <= 65535 else 0


async def start_fake(nursery: trio.Nursery, peer: FakePeer, port: int, what: str) -> str:
    """Serve ``peer`` on ``port``, else (in use) on a free port with a warning: the fakes
    are the sandbox's own, not worth ending the start for. Returns its URL."""
    try:
        url: str = await nursery.start(partial(peer.serve, port=port))
    except OSError as exc:
        get_logger("sandbox").warning(
            "a sandbox peer's port is in use: it listens on a free port instead, "
            "so its links from before this start will not open",
            operation="start_fake",
            peer=what,
            port=port,
            error=exc.strerror or str(exc),
            outcome="degraded",
        )
        url = await nursery.start(peer.serve)
    return url


def sandbox_settings(
    base: Settings,
    *,
    telegram_url: str,
    token: str,
    panel_url: str,
    cryptobot_url: str,
    yookassa_url: str | None = None,
    heleket: FakeHeleket | None = None,
) -> Settings:
    """The base settings pointed at the local peers, with plans (one limits traffic: the
    fake Marzban enforces traffic limits, not device limits), a traffic package, a trial
    and an admin."""
    document: dict[str, Any] = base.model_dump(mode="python")
    document["telegram"] = {
        **document["telegram"],
        "enabled": True,
        "token": token,
        "api_base": telegram_url,
        "admin_chat_ids": document["telegram"]["admin_chat_ids"] or [FIRST_USER_ID],
    }
    document["plans"] = document["plans"] or {
        "month": {
            "title": {"en": "1 month", "ru": "1 месяц"},
            "duration_days": 30,
            "backend": "marzban",
            "prices": {
                "stars": {"XTR": 150},
                "card": {"RUB": 19900},
                "cryptobot": {"RUB": 19900},
            },
            "traffic_limit_gb": 50,
        },
        "quarter": {
            "title": {"en": "3 months", "ru": "3 месяца"},
            "duration_days": 90,
            "backend": "marzban",
            "prices": {"stars": {"XTR": 400}, "card": {"RUB": 49900}},
        },
    }
    document["traffic"] = {
        **document["traffic"],
        "packages": document["traffic"]["packages"]
        or [
            {
                "id": "gb10",
                "gb": 10,
                "prices": {"stars": {"XTR": 50}, "card": {"RUB": 9900}, "cryptobot": {"RUB": 9900}},
            }
        ],
    }
    document["trial"] = {**document["trial"], "enabled": True, "backend": "marzban"}
    document["promo"] = {
        **document["promo"],
        "codes": document["promo"]["codes"] or SANDBOX_CODES,
    }
    document["bot"] = {**document["bot"], "support_contact": "@vpnbot_support"}
    if not document["referrals"]["enabled"]:
        document["referrals"] = SANDBOX_REFERRALS
    document["plugins"]["settings"] = {
        **document["plugins"]["settings"],
        "marzban": {"base_url": panel_url, "username": "admin", "password": PANEL_PASSWORD},
        "cryptobot": {"token": CRYPTOBOT_TOKEN, "base_url": f"{cryptobot_url}/api/"},
        "telegram_payments": {"card_provider_token": CARD_TOKEN},
    }
    if yookassa_url is not None:
        document["plugins"]["settings"]["yookassa"] = {
            "shop_id": YOOKASSA_SHOP,
            "secret_key": YOOKASSA_SECRET,
            "base_url": f"{yookassa_url}/v3/",
            "saved_methods": True,
        }
        month = document["plans"].get("month")
        if month is not None and "yookassa" not in month.get("prices", {}):
            month["prices"]["yookassa"] = {"RUB": 19900}
    if heleket is not None:
        _offer_heleket(document, heleket)
    return Settings.model_validate(_unsecret(document))


def _offer_heleket(document: dict[str, Any], heleket: FakeHeleket) -> None:
    """Heleket beside CryptoBot: its settings, and a price wherever CryptoBot has one."""
    document["plugins"]["settings"].setdefault(
        "heleket",
        {"merchant": heleket.merchant, "api_key": heleket.api_key, "base_url": heleket.url},
    )
    for plan in document["plans"].values():
        prices = plan.get("prices") or {}
        if "cryptobot" in prices:
            prices.setdefault("heleket", dict(prices["cryptobot"]))


SANDBOX_REFERRALS: dict[str, Any] = {
    "enabled": True,
    "invited_trial_hours": 168,
    "levels": [
        {"reward": "percent", "amount": 10, "payments": "every"},
        {"reward": "days", "amount": 3, "payments": "first"},
    ],
}
"""Referrals as a newcomer sees them: a week's trial for the invited, 10 % of every
payment in rubles to the inviter, 3 days to the inviter's inviter on the first one."""
SANDBOX_AD_LINK = "Sandbox welcome"


async def sandbox_ad_link(db: Database) -> None:
    """The sandbox's own acquisition link, made once (``/adlink list`` shows it)."""
    try:
        link = await referrals.create_ad_link(
            db, SANDBOX_AD_LINK, by=FIRST_USER_ID, operation_key="sandbox:welcome"
        )
    except Exception as exc:
        log_failure(get_logger("sandbox"), exc, operation="sandbox_ad_link")
        return
    get_logger("sandbox").info(
        "an acquisition link to try", operation="sandbox_ad_link", start=f"/start ad_{link.code}"
    )


def _unsecret(value: Any) -> Any:
    """model_dump keeps SecretStr objects; validation wants their text back."""
    if isinstance(value, dict):
        return {k: _unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecret(v) for v in value]
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return value


def chat_page_route(telegram_url: str) -> Route:
    """``/sandbox``: a minimal Telegram client over the emulator's control API, beside the
    supervisor's actor table and recent alerts. It reads ``/status``, so it is served on
    the operator listener."""
    page = resources.files("runtime.sandbox").joinpath("page.html").read_text(encoding="utf-8")
    html = page.replace("__TELEGRAM_URL__", telegram_url)

    async def chat(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return Route("/sandbox", chat)


def _webhook_url(public: HttpEndpoint | None, provider: str) -> str | None:
    """Where a provider's webhook reaches the public listener, once it listens."""
    if public is None or not public.urls:
        return None
    return f"{public.urls[0]}/webhooks/payments/{provider}"


async def continue_updates(emulator: TelegramEmulator, db: Database) -> None:
    """Number the emulator's updates after the highest the inbox holds: with the state file
    lost, the emulator would start its ids again, and the inbox skips ids it has seen."""
    try:
        seen = await highest_seen(db)
    except Exception as exc:
        log_failure(get_logger("sandbox"), exc, operation="continue_updates")
        return
    if seen is not None:
        emulator.continue_after(seen)


async def _connected(emulator: TelegramEmulator, db: Database) -> None:
    await continue_updates(emulator, db)
    await sandbox_ad_link(db)


async def run_sandbox(
    base: Settings,
    *,
    environ: Mapping[str, str],
    ports: SandboxPorts = SandboxPorts(),
    early: EarlyStart | None = None,
) -> int:
    """Serve the local peers, then the real runtime against them, until a signal.

    ``early``: what the command line started before (see ``serve``)."""
    log = get_logger("sandbox")
    bound = early.ports if early is not None else BoundPorts()
    emulator = TelegramEmulator(
        bot_username="vpnbot_sandbox_bot",
        bot_name="VPN Sandbox",
        retention=SANDBOX_RETENTION,
        allow_reset=True,
    )
    panel = FakeMarzban(admin_password=PANEL_PASSWORD)
    cryptobot = FakeCryptoBot(CRYPTOBOT_TOKEN)
    yookassa = FakeYooKassa(YOOKASSA_SHOP, YOOKASSA_SECRET)
    heleket = FakeHeleket()
    kept: list[tuple[Kept, Path]] = [
        (emulator, telegram_state_path(base)),
        (cryptobot, cryptobot_state_path(base)),
        (panel, marzban_state_path(base)),
    ]
    for peer, path in kept:
        load_state(peer, path)
    async with trio.open_nursery() as nursery:
        for peer, path in kept:
            nursery.start_soon(keep_saved, peer, path)
        telegram_url: str = await nursery.start(
            lambda task_status: emulator.serve(
                port=ports.telegram, sock=bound.get("telegram"), task_status=task_status
            )
        )
        panel_url = await start_fake(nursery, panel, ports.panel, "the fake Marzban panel")
        cryptobot_url = await start_fake(nursery, cryptobot, ports.cryptobot, "the fake CryptoBot")
        cryptobot.page_base_url = cryptobot_url
        yookassa_url = await start_fake(nursery, yookassa, ports.yookassa, "the fake YooKassa")
        yookassa.page_base_url = yookassa_url
        heleket.page_base_url = await start_fake(
            nursery, heleket, ports.heleket, "the fake Heleket"
        )
        settings = sandbox_settings(
            base,
            telegram_url=telegram_url,
            token=emulator.token,
            panel_url=panel_url,
            cryptobot_url=cryptobot_url,
            yookassa_url=yookassa_url,
            heleket=heleket,
        )
        runtime = build_runtime(
            settings,
            environ=environ,
            operator_routes=[chat_page_route(telegram_url), favicon_route()],
            production=False,
        )
        cryptobot.webhook_url = lambda: _webhook_url(runtime.public_http, "cryptobot")
        yookassa.webhook_url = lambda: _webhook_url(runtime.public_http, "yookassa")
        heleket.webhook_url = lambda: _webhook_url(runtime.public_http, "heleket")
        http = settings.http
        if http.enabled:
            operator = base_url(http.host, bound.port("operator") or http.port)
            public = None
            if http.public.enabled:
                public = base_url(http.public.host, bound.port("public") or http.public.port)
            nursery.start_soon(announce_when_served, operator, public, runtime.supervisor.ready)
        else:
            log.warning("the operator listener is off (http.enabled): no chat page")
        code = await serve(runtime, early=early, on_connected=lambda db: _connected(emulator, db))
        nursery.cancel_scope.cancel()
    return code
