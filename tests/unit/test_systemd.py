"""The unit file is valid and hardened, as systemd itself judges it (offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "vpnbot.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's vpnbot, as an install would."""
    vpnbot = Path(sys.executable).with_name("vpnbot")
    text = UNIT.read_text().replace("/opt/vpnbot/.venv/bin/vpnbot", str(vpnbot))
    copy = tmp_path / "vpnbot.service"
    copy.write_text(text)
    return copy


@needs_systemd
def test_the_unit_verifies_clean(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(installed_copy(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_systemd
def test_the_exposure_is_two_or_lower(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= 2.0


def test_the_unit_keeps_its_promises() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "RestartPreventExitStatus=78",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "StateDirectory=vpnbot",
    ):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(r"^LoadCredential=", text, re.M)


def test_stop_timeout_covers_every_actors_grace_period() -> None:
    """Actors stop one after another, each within its shutdown timeout: systemd must wait
    for all of them before it kills the process."""
    from runtime.app import build_runtime
    from runtime.config import Settings
    from runtime.sandbox import sandbox_settings

    settings = sandbox_settings(
        Settings(),
        telegram_url="http://127.0.0.1:1",
        token="1:unit-test-token-0123456789abcdefghi",
        panel_url="http://127.0.0.1:2",
        cryptobot_url="http://127.0.0.1:3",
    )
    runtime = build_runtime(settings, environ={})
    total = sum(spec.shutdown_timeout for spec in runtime.supervisor.specs)
    match = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)
    assert match and int(match[1]) > total


def _megabytes(value: str) -> int:
    number, unit = int(value[:-1]), value[-1]
    return number * {"K": 1, "M": 1024, "G": 1024 * 1024}[unit] // 1024


def test_memory_is_capped_as_the_guide_says() -> None:
    """MemoryHigh below MemoryMax, both above the measured peak, and the guide quotes them."""
    text = UNIT.read_text()
    high = re.search(r"^MemoryHigh=(\d+[KMG])$", text, re.M)
    top = re.search(r"^MemoryMax=(\d+[KMG])$", text, re.M)
    assert high and top
    guide = (UNIT.parent / "README.md").read_text()
    peak = re.search(r"^  load +[\d.]+ +([\d.]+)$", guide, re.M)
    assert peak, "the guide shows the measured peak"
    assert float(peak[1]) < _megabytes(high[1]) < _megabytes(top[1])
    assert f"MemoryHigh={high[1]}" in guide and f"MemoryMax={top[1]}" in guide


def test_reload_is_sighup_on_every_systemd() -> None:
    """The unit sends SIGHUP with ExecReload (any systemd); Type=notify-reload, which sends
    it itself (systemd 253+), is there to switch to. The process answers SIGHUP with a
    reload, never with its default action."""
    text = UNIT.read_text()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    assert re.search(r"^#Type=notify-reload$", text, re.M)
    assert "ReloadSignal=" not in text  # the default, SIGHUP, is what the runtime handles
    guide = (UNIT.parent / "README.md").read_text()
    assert "systemctl reload vpnbot" in guide and "ExecReload=/bin/kill -HUP $MAINPID" in guide
