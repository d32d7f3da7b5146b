"""The Apprise alert sinks against real HTTP services on 127.0.0.1 (json:// and ntfy://)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import apprise
import pytest
import structlog
import trio

from plugins.alert_sinks import AppriseSink
from runtime.alerts import AlertDeliveryError, AlertPipeline, Severity
from runtime.config import ConfigError, Settings, load_settings
from runtime.plugin_api import load_plugins
from runtime.supervision import ActorContext
from runtime.testing import RecordingSink, check_alert_sink, sample_alert
from tests.http_peer import FakeHttpServer, closed_port_url, full_text, serving

SECRET = "PATH-SECRET-0123456789"
DEADLINE = 60.0
"""Generous: a loaded machine may take seconds to start a thread and connect."""


@pytest.fixture
async def server() -> AsyncIterator[FakeHttpServer]:
    async with serving() as fake:
        yield fake


def url_of(server_url: str, scheme: str = "json", path: str = f"hooks/{SECRET}") -> str:
    return f"{scheme}://{server_url.split('://', 1)[1]}/{path}"


def sink_for(url: str, *, timeout: float = 5.0, **options: Severity) -> AppriseSink:
    service = apprise.Apprise.instantiate(url)
    assert service is not None, url
    return AppriseSink(service, url, name="apprise:test", timeout=timeout, **options)


class Reporter:
    def iteration_failed(self, name: str, exc: BaseException) -> None:
        pass

    def iteration_succeeded(self, name: str) -> None:
        pass

    def set_degraded(self, name: str, reason: str | None, cause: str | None) -> None:
        pass


async def test_a_json_service_gets_the_alert(server: FakeHttpServer) -> None:
    alert = sample_alert(severity=Severity.CRITICAL, title="Database down", suppressed_count=3)

    with trio.fail_after(DEADLINE):
        await sink_for(url_of(server.url)).send(alert)

    [request] = server.requests
    assert request.method == "POST"
    assert request.path == f"/hooks/{SECRET}"
    body = request.json()
    assert body["type"] == "failure"
    assert body["title"] == "[CRITICAL] Database down"
    message = body["message"]
    assert message.startswith(f"{alert.text}\n\ncomponent: tests\nkey: test:sample\n")
    assert "correlation id: test-correlation-id" in message
    assert "+3 similar suppressed" in message


async def test_an_ntfy_service_gets_the_alert(server: FakeHttpServer) -> None:
    with trio.fail_after(DEADLINE):
        await sink_for(url_of(server.url, "ntfy", "vpnbot-alerts")).send(sample_alert())

    [request] = server.requests
    body = request.json()
    assert body["topic"] == "vpnbot-alerts"
    assert body["title"] == "[WARNING] Sample alert"
    assert body["message"].startswith("Something an admin should know about.\n")


HOSTILE_TEXT = (
    'peer said: <script>alert(1)</script> <a href="x">y</a> *bold* [link](http://x) '
    '@everyone <!channel> ","type":"success","title":"forged\r\nX-Title: forged\x00\x1b[31m'
)


async def test_outside_text_stays_text_in_every_format(server: FakeHttpServer) -> None:
    """Apprise is told the body is plain text: services rendering HTML or Markdown get it
    escaped; JSON fields cannot be added; titles stay one line without tags; nobody gets a
    room-wide mention."""
    alert = sample_alert(title="Refund <b>failed</b>\nX-Injected: 1", text=HOSTILE_TEXT)
    with trio.fail_after(DEADLINE):
        for query in ("", "?format=html", "?format=markdown"):
            await sink_for(url_of(server.url, path=f"h{query}")).send(alert)
        await sink_for(url_of(server.url, "ntfy", "topic")).send(alert)

    plain, html, markdown, ntfy = (request.json() for request in server.requests)
    for body in (plain, html, markdown):
        assert set(body) == {"version", "title", "message", "attachments", "type"}
        assert body["type"] == "warning"
    assert set(ntfy) == {"topic", "title", "message"}
    for body in (plain, html, markdown, ntfy):
        assert body["title"] == "[WARNING] Refund \u2039b\u203afailed\u2039/b\u203a X-Injected: 1"
        message = body["message"]
        assert "@everyone" not in message and "@\u200beveryone" in message
        assert "<!channel>" not in message
        assert "\x00" not in message and "\x1b" not in message and "\r" not in message
    assert "<script>" not in html["message"] and "<a " not in html["message"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html["message"]
    assert "\\*bold\\*" in markdown["message"] and "\\[link\\]" in markdown["message"]
    assert '","type":"success' in plain["message"]
    assert not any(name.startswith("x-title") for name in server.requests[-1].headers)


async def test_alerts_below_the_minimum_severity_are_not_sent(server: FakeHttpServer) -> None:
    sink = sink_for(url_of(server.url), min_severity=Severity.CRITICAL)
    with trio.fail_after(DEADLINE):
        await sink.send(sample_alert(severity=Severity.WARNING))
        assert server.requests == []
        await sink.send(sample_alert(severity=Severity.CRITICAL))
    assert len(server.requests) == 1


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def root_log_lines() -> Iterator[list[str]]:
    """Every line that reaches the root logger (where the service's handler sits), at any
    level; pytest's own capture also listens on loggers that do not propagate."""
    root, handler = logging.getLogger(), Lines()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_refusing_service_fails_without_its_secret() -> None:
    sink = sink_for(f"{url_of(closed_port_url())}?pass={SECRET}-Q")
    with (
        root_log_lines() as lines,
        structlog.testing.capture_logs() as logs,
        pytest.raises(AlertDeliveryError, match=r"json://127\.0\.0\.1 refused") as info,
        trio.fail_after(DEADLINE),
    ):
        await sink.send(sample_alert())
    assert "Connection error" in str(info.value)
    assert SECRET not in full_text(info.value)
    assert SECRET not in repr(sink)
    assert not [line for line in lines if SECRET in line]
    assert SECRET not in repr(logs)
    assert info.value.__cause__ is None


async def test_an_error_answer_is_a_failure(server: FakeHttpServer) -> None:
    server.respond = lambda request: (500, {"error": f"no {SECRET}"})
    with pytest.raises(AlertDeliveryError, match=r"refused the alert: .*500") as info:
        with trio.fail_after(DEADLINE):
            await sink_for(url_of(server.url)).send(sample_alert())
    assert SECRET not in full_text(info.value)


async def test_a_hanging_service_fails_within_its_timeout(server: FakeHttpServer) -> None:
    server.hang = True
    sink = sink_for(url_of(server.url), timeout=0.5)
    with trio.fail_after(DEADLINE):
        for _ in range(2):
            # Apprise's socket timeout or the sink's deadline, whichever a loaded machine
            # meets first.
            with pytest.raises(AlertDeliveryError, match=r"within 0\.5s|refused the alert"):
                await sink.send(sample_alert())


async def test_the_pipeline_goes_on_past_hanging_and_refusing_services(
    server: FakeHttpServer, tmp_path: Path
) -> None:
    """Configured as an operator would: one service hangs, one refuses connections, one
    works; the working one, the webhook and the other sinks still get the alert."""
    async with serving() as hanging:
        hanging.hang = True
        urls = "\n".join(
            [
                url_of(hanging.url, path="hang"),
                url_of(closed_port_url(), path="refused"),
                url_of(server.url, "ntfy", "works"),
            ]
        )
        settings = Settings.model_validate(
            {
                "alerts": {
                    "webhook": {"url": f"{server.url}/hook"},
                    "apprise": {"urls": urls, "timeout_seconds": 1.0},
                }
            }
        )
        loaded = load_plugins(
            settings,
            entry_points=[EntryPoint("alert_sinks", "plugins.alert_sinks", "vpnbot.plugins")],
            environ={},
        )
        recording = RecordingSink()
        pipeline = AlertPipeline.from_settings(settings, [recording, *loaded.alert_sinks()])
        names = [sink.name for sink in pipeline.sinks]
        assert names == [
            *("log", "recording", "webhook"),
            *("apprise:json", "apprise:json:2", "apprise:ntfy"),
        ]
        ctx = ActorContext(pipeline.actor_spec(), Reporter(), lambda n: contextlib.nullcontext())
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run, ctx)
                pipeline.submit(sample_alert(key="e2e"))
                ctx.stop_requested.set()

    assert recording.keys == ["e2e"]
    assert sorted(r.path for r in server.requests) == ["/", "/hook"]
    stats = pipeline.stats
    assert stats.sent_total == {"log": 1, "recording": 1, "webhook": 1, "apprise:ntfy": 1}
    assert stats.failed_total == {"apprise:json": 1, "apprise:json:2": 1}


async def test_the_sink_follows_the_contract(server: FakeHttpServer) -> None:
    await check_alert_sink(sink_for(url_of(server.url)), within_seconds=DEADLINE)


def test_unusable_urls_are_left_out_with_a_log_line_without_them() -> None:
    settings = Settings.model_validate(
        {"alerts": {"apprise": {"urls": f"nosuchservice://{SECRET}@x json://127.0.0.1/a"}}}
    )
    with structlog.testing.capture_logs() as logs:
        loaded = load_plugins(
            settings,
            entry_points=[EntryPoint("alert_sinks", "plugins.alert_sinks", "vpnbot.plugins")],
            environ={},
        )
    assert [sink.name for sink in loaded.alert_sinks()] == ["apprise:json"]
    [line] = [log for log in logs if "Apprise cannot use" in log["event"]]
    assert line["url_number"] == 1 and line["service"] == "nosuchservice://"
    assert SECRET not in repr(logs)


def test_urls_are_checked_secret_and_read_from_a_credential_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(f'[alerts.apprise]\nurls = "ntfy://a {SECRET}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "bad.toml", environ={})
    assert "alerts.apprise.urls: URL 2 of 2 is not shaped like service://" in str(info.value)
    assert SECRET not in str(info.value)

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    first, second = f"ntfy://ntfy.example.com/{SECRET}", "slack://T000/B000/XXXXSECRET"
    (credentials / "alerts.apprise.urls").write_text(f"{first}\n{second}\n")
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.alerts.apprise.url_list() == [first, second]
    assert SECRET not in repr(settings)
    assert {first, second} <= set(settings.secret_values())
