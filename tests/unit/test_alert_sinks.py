"""The built-in alert sinks against real HTTP peers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint

import pytest
import trio

from plugins.alert_sinks import TelegramSink, WebhookSink
from plugins.alert_sinks.telegram import MESSAGE_LIMIT, format_alert
from runtime.alerts import AlertDeliveryError, AlertPipeline, Severity
from runtime.config import Settings
from runtime.plugin_api import load_plugins
from runtime.supervision import ActorContext
from runtime.testing import check_alert_sink, sample_alert
from tests.http_peer import FakeHttpServer, closed_port_url, full_text, serving

TOKEN = "123456:SUPER-SECRET-TOKEN-0123456789abcdef"


@pytest.fixture
async def server() -> AsyncIterator[FakeHttpServer]:
    async with serving() as fake:
        yield fake


# -- webhook ----------------------------------------------------------------------------------


async def test_webhook_posts_signed_json(server: FakeHttpServer) -> None:
    sink = WebhookSink(f"{server.url}/hooks/alerts", secret="shh", timeout=5)
    alert = sample_alert(key="db:down", severity=Severity.CRITICAL, suppressed_count=2)

    await sink.send(alert)

    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/hooks/alerts"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body == alert.to_json()
    assert body["severity"] == "critical"
    assert body["key"] == "db:down"
    assert body["suppressed_count"] == 2
    assert body["correlation_id"] == "test-correlation-id"
    expected = hmac.new(b"shh", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-vpnbot-signature"], f"sha256={expected}")


async def test_webhook_without_secret_is_unsigned(server: FakeHttpServer) -> None:
    await WebhookSink(f"{server.url}/h").send(sample_alert())
    assert "x-vpnbot-signature" not in server.requests[0].headers


async def test_webhook_non_2xx_raises_without_the_url_path(server: FakeHttpServer) -> None:
    server.respond = lambda request: (500, {"error": "boom"})
    sink = WebhookSink(f"{server.url}/hooks/PATH-SECRET")
    with pytest.raises(AlertDeliveryError, match="answered 500") as info:
        await sink.send(sample_alert())
    assert "PATH-SECRET" not in full_text(info.value)
    assert "PATH-SECRET" not in repr(sink)


async def test_webhook_unreachable_raises_without_the_url_path() -> None:
    sink = WebhookSink(f"{closed_port_url()}/hooks/PATH-SECRET", timeout=5)
    with pytest.raises(AlertDeliveryError, match="ConnectError") as info:
        await sink.send(sample_alert())
    assert "PATH-SECRET" not in full_text(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_webhook_times_out(server: FakeHttpServer) -> None:
    server.hang = True
    with pytest.raises(AlertDeliveryError, match="Timeout"):
        await WebhookSink(f"{server.url}/h", timeout=0.2).send(sample_alert())


async def test_webhook_follows_the_sink_contract(server: FakeHttpServer) -> None:
    await check_alert_sink(WebhookSink(f"{server.url}/h"))
    assert len(server.requests) == 1


# -- telegram ---------------------------------------------------------------------------------


async def test_telegram_sends_plain_text_to_every_chat(server: FakeHttpServer) -> None:
    sink = TelegramSink(TOKEN, [11, -22], api_base=server.url + "/", timeout=5)
    alert = sample_alert(title="Payments <down>", text="a_b *c*", suppressed_count=4)

    await sink.send(alert)

    assert [r.path for r in server.requests] == [f"/bot{TOKEN}/sendMessage"] * 2
    assert [r.method for r in server.requests] == ["POST", "POST"]
    bodies = [r.json() for r in server.requests]
    assert [b["chat_id"] for b in bodies] == [11, -22]
    assert all("parse_mode" not in b for b in bodies)
    text = bodies[0]["text"]
    assert text == format_alert(alert)
    assert text.startswith("[WARNING] Payments <down>\n")
    assert "a_b *c*" in text  # nothing escaped
    assert "+4 similar suppressed" in text


async def test_telegram_ok_false_is_a_failure_without_the_token(server: FakeHttpServer) -> None:
    server.respond = lambda request: (
        200,
        {"ok": False, "description": f"Bad Request: chat not found at {request.path}"},
    )
    sink = TelegramSink(TOKEN, [11], api_base=server.url)
    with pytest.raises(AlertDeliveryError) as info:
        await sink.send(sample_alert())
    message = str(info.value)
    assert "failed for 1 of 1 chats" in message
    assert "chat 11: answer not ok (Bad Request: chat not found" in message
    assert TOKEN not in full_text(info.value)
    assert "SUPER-SECRET" not in full_text(info.value)


async def test_telegram_non_2xx_is_a_failure(server: FakeHttpServer) -> None:
    server.respond = lambda request: (401, {"ok": False, "description": "Unauthorized"})
    with pytest.raises(AlertDeliveryError, match="HTTP 401 \\(Unauthorized\\)") as info:
        await TelegramSink(TOKEN, [1], api_base=server.url).send(sample_alert())
    assert TOKEN not in full_text(info.value)


async def test_telegram_one_failing_chat_does_not_stop_the_others(
    server: FakeHttpServer,
) -> None:
    server.respond = lambda request: (
        (400, {"ok": False, "description": "Bad Request: chat not found"})
        if request.json()["chat_id"] == 1
        else (200, {"ok": True, "result": {}})
    )
    with pytest.raises(AlertDeliveryError, match="failed for 1 of 2 chats: chat 1: HTTP 400"):
        await TelegramSink(TOKEN, [1, 2], api_base=server.url).send(sample_alert())
    assert [r.json()["chat_id"] for r in server.requests] == [1, 2]


async def test_telegram_unreachable_error_has_no_token() -> None:
    sink = TelegramSink(TOKEN, [1], api_base=closed_port_url(), timeout=5)
    with pytest.raises(AlertDeliveryError, match="ConnectError") as info:
        await sink.send(sample_alert())
    assert TOKEN not in full_text(info.value)
    assert TOKEN not in repr(sink)


async def test_telegram_follows_the_sink_contract(server: FakeHttpServer) -> None:
    await check_alert_sink(TelegramSink(TOKEN, [5], api_base=server.url))


def test_telegram_text_is_cut_to_the_message_limit() -> None:
    text = format_alert(sample_alert(text="x" * 10_000))
    assert len(text) == MESSAGE_LIMIT
    assert text.endswith("…")


def test_telegram_sink_needs_a_token_and_chats() -> None:
    with pytest.raises(ValueError):
        TelegramSink("", [1])
    with pytest.raises(ValueError):
        TelegramSink(TOKEN, [])


# -- end to end: built-in plugin, settings, pipeline ------------------------------------------


class Reporter:
    def iteration_failed(self, name: str, exc: BaseException) -> None:
        pass

    def iteration_succeeded(self, name: str) -> None:
        pass

    def set_degraded(self, name: str, reason: str | None, cause: str | None) -> None:
        pass


async def test_configured_sinks_deliver_through_the_pipeline(server: FakeHttpServer) -> None:
    settings = Settings.model_validate(
        {
            "telegram": {"token": TOKEN, "api_base": server.url, "admin_chat_ids": [7]},
            "alerts": {
                "webhook": {"url": f"{server.url}/hook", "secret": "k"},
                "telegram": {"enabled": True, "chat_ids": [8]},
            },
        }
    )
    loaded = load_plugins(
        settings,
        entry_points=[EntryPoint("alert_sinks", "plugins.alert_sinks", "vpnbot.plugins")],
        environ={},
    )
    pipeline = AlertPipeline.from_settings(settings, loaded.alert_sinks())
    ctx = ActorContext(pipeline.actor_spec(), Reporter(), lambda name: contextlib.nullcontext())
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run, ctx)
        pipeline.submit(sample_alert(key="e2e"))
        ctx.stop_requested.set()

    assert sorted(r.path for r in server.requests) == sorted(["/hook", f"/bot{TOKEN}/sendMessage"])
    telegram_request = next(r for r in server.requests if r.path != "/hook")
    assert telegram_request.json()["chat_id"] == 8
    assert pipeline.stats.sent_total == {"log": 1, "webhook": 1, "telegram": 1}
