"""Commands that do not run the bot import only what they use.

Each command runs in a fresh interpreter, which then reports the top-level packages it
imported. aiogram alone costs seconds of CPU and ~170 MB (aiogram issues #1876, #1891): no
command but ``run`` may pay for it, nor for the HTTP server; the commands that never touch
the database do not import its driver either. No timing here: what is imported is the
deterministic part of a command's start (``bench/startup_bench.py`` measures the time).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "config" / "vpnbot.example.toml"

REPORT = """
import json, sys
import supervisor
try:
    code = supervisor.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

NEVER = {"aiogram", "aiohttp", "hypercorn"}
"""The bot's libraries and the HTTP server: only ``run`` uses them."""
DATABASE = {"asyncpg", "trio_asyncio"}
"""The database driver and the bridge to it."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh(
    code: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``code`` run in a fresh interpreter from the project's root."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _imported(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    done = _fresh(REPORT, *argv, env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["config-reference"],
        ["plugins"],
        ["status", "--url", "http://127.0.0.1:{port}"],
        ["status"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_commands_without_the_database_import_neither_the_bot_nor_the_driver(
    argv: list[str],
) -> None:
    port = _closed_port()
    code, modules = _imported(
        *(a.format(port=port) for a in argv), env={"VPNBOT_HTTP__PORT": str(port)}
    )
    assert code in (0, 69)  # 69: nothing answers at the port
    assert not modules & (NEVER | DATABASE)


@pytest.mark.parametrize("path", [None, EXAMPLE_CONFIG], ids=["sandbox", "example"])
def test_check_config_imports_neither_the_bot_nor_the_http_server(path: Path | None) -> None:
    """It assembles the runtime as ``run`` does (the same code refuses the same things),
    whose storage modules import the driver; nothing is connected."""
    token = {"VPNBOT_TELEGRAM__TOKEN": "123456:AAcheckConfigToken0123456789abcdefg"}
    code, modules = _imported("check-config", *([str(path)] if path else []), env=token)
    assert code == 0
    assert not modules & NEVER


@pytest.mark.parametrize("argv", [["migrate"], ["updates"]], ids=" ".join)
def test_database_commands_import_neither_the_bot_nor_the_http_server(argv: list[str]) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{_closed_port()}/none"
    code, modules = _imported(*argv, env={"VPNBOT_DATABASE__DSN": dsn})
    assert code == 75  # unreachable: temporary
    assert not modules & NEVER


KEPT_OUT = {"rich", "pygments", "greenlet"}
"""What structlog would import for features our logs never use: rich's pretty tracebacks
(~3 MB of every process), greenlet for the deprecated ``structlog.threadlocal``."""


@pytest.mark.parametrize("argv", [["check-config"], ["plugins"]], ids=" ".join)
def test_the_logs_come_without_rich_or_greenlet(argv: list[str]) -> None:
    token = {"VPNBOT_TELEGRAM__TOKEN": "123456:AAcheckConfigToken0123456789abcdefg"}
    code, modules = _imported(*argv, env=token)
    assert code == 0
    assert "structlog" in modules
    assert not modules & KEPT_OUT


@pytest.mark.parametrize("name", ["rich", "greenlet"])
def test_what_structlog_goes_without_stays_importable_for_whatever_else_wants_it(
    name: str,
) -> None:
    check = (
        "import importlib, importlib.util, sys\n"
        "import runtime.logs\n"
        f"assert {name!r} not in sys.modules, 'imported with structlog'\n"
        f"if importlib.util.find_spec({name!r}) is not None:\n"
        f"    importlib.import_module({name!r})\n"
        "print('ok')\n"
    )
    done = _fresh(check)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("path", [None, EXAMPLE_CONFIG], ids=["sandbox", "example"])
def test_assembling_the_runtime_leaves_babel_unimported(path: Path | None) -> None:
    """``check-config`` assembles the runtime as ``run`` does: an idle service formats
    nothing, so it holds neither Babel nor any language's CLDR data."""
    token = {"VPNBOT_TELEGRAM__TOKEN": "123456:AAcheckConfigToken0123456789abcdefg"}
    code, modules = _imported("check-config", *([str(path)] if path else []), env=token)
    assert code == 0
    assert "runtime" in modules
    assert "babel" not in modules


MODULES = """
import json, sys
import supervisor
try:
    code = supervisor.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("path", [None, EXAMPLE_CONFIG], ids=["sandbox", "example"])
def test_assembling_the_runtime_leaves_the_config_reference_unimported(path: Path | None) -> None:
    """The reference (it parses the settings models' sources) is ``config-reference``'s."""
    token = {"VPNBOT_TELEGRAM__TOKEN": "123456:AAcheckConfigToken0123456789abcdefg"}
    done = _fresh(MODULES, "check-config", *([str(path)] if path else []), env=token)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert "runtime.config" in report["modules"]
    assert "runtime.config._reference" not in report["modules"]
    assert "runtime.config._attribute_docs" not in report["modules"]


SERVICE = """
import json, sys
import runtime.app._runtime, runtime.bot._actor, runtime.workers
from runtime.bot.handlers import routers
routers()
print(json.dumps(sorted(m for m in sys.modules if m in sys.argv[1:])))
"""
ON_FIRST_USE = [
    "runtime.admin_actions",
    "runtime.storage.admin",
    "runtime.storage.admin_actions",
    "runtime.storage.moderation",
    "runtime.app._reload",
    "runtime.config._diff",
    "runtime.broadcasts",
    "runtime.config._reference",
    "runtime.logs._console",
    "runtime.storage._embedded",
]
"""What the service imports when it is used (an admin's command, a SIGHUP, a broadcast to
render, the ``config-reference`` command, logs on a terminal, the embedded PostgreSQL), not
at its start: an idle service does not hold it."""


def test_the_service_leaves_what_it_uses_now_and_then_unimported() -> None:
    done = _fresh(SERVICE, *ON_FIRST_USE)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stderr


def test_babel_and_a_languages_data_load_on_its_first_formatting() -> None:
    check = (
        "import json, sys\n"
        "import runtime.app, runtime.bot, runtime.workers\n"
        "from runtime.i18n import format_money, load_translator, plural_category\n"
        "load_translator()\n"
        "before = 'babel' in sys.modules\n"
        "text = format_money(19900, 'RUB', language='ru')\n"
        "form = plural_category('ru', 3)\n"
        "import babel.localedata\n"
        "print(json.dumps([before, text, form, sorted(babel.localedata._cache)]))\n"
    )
    done = _fresh(check)
    before, text, form, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert before is False
    assert (text, form) == ("199,00\xa0₽", "few")
    assert set(loaded) == {"root", "ru"}


UNCONFIGURED_BACKENDS = """
import json, sys
from runtime.config import Settings
from runtime.plugin_api import load_plugins
settings = Settings.model_validate(json.loads(sys.argv[1]))
loaded = load_plugins(settings, environ={})
print(json.dumps({
    "backends": [backend.name for backend in loaded.vpn_backends()],
    "payment_providers": [provider.name for provider in loaded.payment_providers()],
    "problems": [problem.plugin for problem in loaded.problems],
    "provides": {row["name"]: row["provides"] for row in loaded.describe()},
    "modules": sorted(m for m in sys.modules if m.startswith("plugins.")),
}))
"""
LAZY_PLUGINS = ("cryptobot", "marzban", "outline", "remnawave", "xui")


def _plugins_loaded(settings: dict[str, object]) -> dict[str, Any]:
    done = _fresh(UNCONFIGURED_BACKENDS, json.dumps(settings))
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_an_unconfigured_plugin_loads_without_its_backend_and_models() -> None:
    """Each plugin is loaded and lists its offer; its backend or provider, client and
    pydantic models (about 1 MB for 3x-ui) are imported only when its table is configured."""
    report = _plugins_loaded({})
    assert report["backends"] == [] and report["problems"] == []
    assert report["payment_providers"] == []
    for plugin in LAZY_PLUGINS:
        assert f"plugins.{plugin}" in report["modules"]
        assert f"{plugin} (off: set plugins.settings.{plugin})" in report["provides"][plugin]
        assert [m for m in report["modules"] if m.startswith(f"plugins.{plugin}.")] == []


def test_alert_sinks_are_imported_when_configured() -> None:
    """The alert sinks' modules (and their HTTP clients) only for the sinks configured."""
    sinks = [m for m in _plugins_loaded({})["modules"] if m.startswith("plugins.alert_sinks.")]
    assert sinks == []
    webhook = {"alerts": {"webhook": {"url": "https://alerts.example.com/hook"}}}
    sinks = [m for m in _plugins_loaded(webhook)["modules"] if m.startswith("plugins.alert_sinks.")]
    assert sinks == ["plugins.alert_sinks.webhook"]


def test_a_configured_plugin_imports_its_backend() -> None:
    xui = {
        "base_url": "https://panel.example.com:2053/AbCdEf/",
        "username": "admin",
        "password": "secret-password",
        "inbound_ids": [1],
        "subscription_base_url": "https://sub.example.com:2096/sub/",
    }
    report = _plugins_loaded({"plugins": {"settings": {"xui": xui}}})
    assert report["backends"] == ["xui"] and report["problems"] == []
    assert "plugins.xui.backend" in report["modules"]
    assert "plugins.marzban.backend" not in report["modules"]


def test_the_service_imports_neither_hypercorn_nor_http2() -> None:
    """What the running service imports (the sandbox's stand-ins aside): hypercorn and h2
    are a few MB of a memory budget for protocols it does not speak."""
    check = (
        "import json, sys\n"
        "from runtime.app._without_http2 import import_httpx_without_http2\n"
        "import_httpx_without_http2()\n"
        "import runtime.app._runtime, runtime.bot._actor, runtime.web._server\n"
        "import httpx; httpx.AsyncClient()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = _fresh(check)
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not imported & {"hypercorn", "h2", "hpack", "hyperframe", "wsproto"}
    assert "httpx" in imported
