"""``[http]``, ``[http.public]`` and ``[http.limits]``: two sockets, one set of limits."""

from __future__ import annotations

import pathlib

import pytest
from starlette.applications import Starlette

import supervisor as cli
from runtime.app import base_url, operator_url
from runtime.app._listeners import listeners, request_limits
from runtime.config import ConfigError, Settings, load_settings

WEBHOOK = """
[telegram]
token = "123456:AAHwebhookModeToken0123456789abcdef"

[bot]
mode = "webhook"
webhook_url = "https://bot.example.com/telegram/hook"
webhook_secret = "s3cret-token"
"""


def load(tmp_path: pathlib.Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "vpnbot.toml"
    path.write_text(text)
    return load_settings(path, environ=environ or {})


def problems(tmp_path: pathlib.Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return {p.path: p.reason for p in caught.value.problems}


def test_defaults_are_two_loopback_sockets() -> None:
    http = Settings().http
    assert (http.enabled, http.host, http.port) == (True, "127.0.0.1", 8080)
    assert (http.public.enabled, http.public.host, http.public.port) == (True, "127.0.0.1", 8088)
    assert 8081 not in (http.port, http.public.port)  # the sandbox's Telegram emulator


def test_limits_reach_both_listeners(tmp_path: pathlib.Path) -> None:
    settings = load(
        tmp_path,
        "[http.limits]\nmax_body_bytes = 1000\nmax_header_bytes = 2048\n"
        "header_timeout_seconds = 2.5\nbody_timeout_seconds = 7\n",
        environ={"VPNBOT_HTTP__PUBLIC__PORT": "9001"},
    )
    operator, public = listeners(settings.http, operator=Starlette, public=Starlette)
    assert operator is not None and public is not None
    assert operator.limits == public.limits == request_limits(settings.http)
    assert (public.limits.max_body_bytes, public.limits.max_header_bytes) == (1000, 2048)
    assert (public.limits.header_timeout_seconds, public.limits.body_timeout_seconds) == (2.5, 7)
    assert settings.http.public.port == 9001


def test_a_listener_can_be_turned_off(tmp_path: pathlib.Path) -> None:
    settings = load(tmp_path, "[http.public]\nenabled = false\n")
    operator, public = listeners(settings.http, operator=Starlette, public=Starlette)
    assert operator is not None and public is None


@pytest.mark.parametrize(
    "text",
    [
        "[http]\nport = 9000\n[http.public]\nport = 9000\n",
        '[http]\nport = 9000\n[http.public]\nport = 9000\nhost = "0.0.0.0"\n',
        '[http]\nport = 9000\nhost = "::"\n[http.public]\nport = 9000\nhost = "10.0.0.5"\n',
    ],
)
def test_one_socket_cannot_serve_both(tmp_path: pathlib.Path, text: str) -> None:
    assert problems(tmp_path, text) == {
        "http.public.port": "must differ from http.port (9000): one socket each"
    }


def test_the_same_port_on_two_addresses_or_port_zero_is_fine(tmp_path: pathlib.Path) -> None:
    load(tmp_path, '[http]\nport = 9000\n[http.public]\nport = 9000\nhost = "10.0.0.5"\n')
    load(tmp_path, "[http]\nport = 0\n[http.public]\nport = 0\n")
    load(tmp_path, "[http]\nport = 9000\n[http.public]\nport = 9000\nenabled = false\n")


def test_webhook_mode_needs_the_public_listener(tmp_path: pathlib.Path) -> None:
    assert problems(tmp_path, WEBHOOK + "\n[http.public]\nenabled = false\n") == {
        "http.public.enabled": 'must be true when bot.mode is "webhook"'
    }
    load(tmp_path, WEBHOOK + "\n[http]\nenabled = false\n")  # the operator one is optional


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[http.limits]\nmax_body_bytes = -1", "http.limits.max_body_bytes"),
        ("[http.limits]\nmax_body_bytes = 1e9", "http.limits.max_body_bytes"),
        ("[http.limits]\nmax_header_bytes = 10", "http.limits.max_header_bytes"),
        ("[http.limits]\nheader_timeout_seconds = 0", "http.limits.header_timeout_seconds"),
        ("[http.limits]\nbody_timeout_seconds = inf", "http.limits.body_timeout_seconds"),
        ("[http.public]\nport = 70000", "http.public.port"),
        ('[http.public]\nhost = ""', "http.public.host"),
        ("[http.public]\nprot = 1", "http.public.prot"),
    ],
)
def test_impossible_values(tmp_path: pathlib.Path, text: str, path: str) -> None:
    assert list(problems(tmp_path, text)) == [path]


def test_status_finds_the_operator_listener(tmp_path: pathlib.Path) -> None:
    assert operator_url(Settings().http) == "http://127.0.0.1:8080"
    assert base_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"
    assert base_url("::", 9000) == "http://[::1]:9000"
    assert base_url("fd00::5", 9000) == "http://[fd00::5]:9000"


def test_status_with_the_operator_listener_off_says_so(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vpnbot.toml"
    path.write_text("[http]\nenabled = false\n")
    assert cli.main(["status", "--config", str(path)], environ={}) == 78
    assert "operator listener is off" in capsys.readouterr().err
