"""``[service] asyncio_loop``: the loop the bridge opens, chosen by the operator."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import get_args

import pytest

from runtime.bridge import LoopKind
from runtime.config import ConfigError, Settings, load_settings
from runtime.config._model import AsyncioLoop


def test_the_setting_offers_exactly_the_bridges_kinds() -> None:
    assert get_args(AsyncioLoop) == get_args(LoopKind)
    assert Settings().service.asyncio_loop == "auto"


def test_the_setting_is_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "vpnbot.toml"
    path.write_text('[service]\nasyncio_loop = "trio-asyncio"\n', encoding="utf-8")
    assert load_settings(path, environ={}).service.asyncio_loop == "trio-asyncio"
    environ = {"VPNBOT_SERVICE__ASYNCIO_LOOP": "asyncio"}
    assert load_settings(path, environ=environ).service.asyncio_loop == "asyncio"


def test_an_unknown_loop_and_a_missing_uvloop_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "vpnbot.toml"
    path.write_text('[service]\nasyncio_loop = "tokio"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as unknown:
        load_settings(path, environ={})
    assert [p.path for p in unknown.value.problems] == ["service.asyncio_loop"]

    real_find_spec = importlib.util.find_spec

    def without_uvloop(name: str, *args: object) -> object:
        return None if name == "uvloop" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_uvloop)
    path.write_text('[service]\nasyncio_loop = "uvloop"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as missing:
        load_settings(path, environ={})
    [problem] = missing.value.problems
    assert problem.path == "service.asyncio_loop" and "uvloop is not installed" in problem.reason
    path.write_text('[service]\nasyncio_loop = "auto"\n', encoding="utf-8")
    assert load_settings(path, environ={}).service.asyncio_loop == "auto"
