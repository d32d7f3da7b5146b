"""The sandbox's state file: written whole, read back, a broken one set aside with a clear
log line, and removed by ``vpnbot run --fresh`` (refused outside the sandbox)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

import supervisor
from runtime.config import Settings
from runtime.sandbox import StateInUse, remove_state
from runtime.sandbox._state import (
    cryptobot_state_path,
    encode,
    keep_saved,
    load_state,
    telegram_state_path,
    write_atomically,
)
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.telegram import Limits, TelegramEmulator


def settings_in(directory: Path) -> Settings:
    return Settings.model_validate({"database": {"data_dir": str(directory / "var" / "pgdata")}})


def test_the_state_file_lives_beside_the_embedded_database(tmp_path: Path) -> None:
    path = telegram_state_path(settings_in(tmp_path))
    assert path == tmp_path / "var" / "sandbox-telegram.json"


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s.json"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 1}', b"\xff\xfe", b"[]", b'{"version": 7}']
)
def test_an_unreadable_file_is_logged_set_aside_and_the_emulator_starts_empty(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "sandbox-telegram.json"
    path.write_bytes(content)
    emulator = TelegramEmulator()
    with capture_logs() as logs:
        assert load_state(emulator, path) is False
    (line,) = [entry for entry in logs if entry.get("operation") == "restore"]
    assert line["log_level"] == "warning"
    assert "starting afresh" in line["event"] and line["reason"]
    assert emulator.users == []
    assert not path.exists()
    assert (tmp_path / "sandbox-telegram.json.unreadable").read_bytes() == content


def test_no_file_is_a_fresh_start_without_a_warning(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load_state(TelegramEmulator(), tmp_path / "none.json") is False
    assert logs == []


async def test_changes_are_saved_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "var" / "sandbox-telegram.json"
    emulator = TelegramEmulator(limits=Limits.off())
    writes = trio.Semaphore(0, max_value=1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_saved(emulator, path, pause=0.01, on_saved=writes.release))
        with trio.fail_after(30):
            await writes.acquire()  # the state as it is at the start
        user = emulator.create_user(first_name="Ann")
        emulator.send_text(user.id, "remember me")
        with trio.fail_after(30):
            await writes.acquire()
        assert "remember me" in json.dumps(json.loads(path.read_bytes()))
        emulator.send_text(user.id, "said last")
        nursery.cancel_scope.cancel()  # the last change is saved on the way out
    restored = TelegramEmulator()
    assert load_state(restored, path) is True
    assert [m.text for m in restored.messages(user.id, from_bot=None)] == [
        "remember me",
        "said last",
    ]


def test_remove_state_removes_the_database_and_the_chats(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    data_dir = tmp_path / "var" / "pgdata"
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("16")
    telegram_state_path(settings).write_text("{}")
    other = tmp_path / "var" / "keep.txt"
    other.write_text("not the sandbox's")
    removed = remove_state(settings)
    assert set(removed) == {data_dir, telegram_state_path(settings)}
    cryptobot_state_path(settings).write_text("{}")
    assert remove_state(settings) == [cryptobot_state_path(settings)]
    assert not data_dir.exists() and not telegram_state_path(settings).exists()
    assert other.exists()


def test_remove_state_refuses_while_the_database_runs(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    data_dir = tmp_path / "var" / "pgdata"
    data_dir.mkdir(parents=True)
    (data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{data_dir}\n")
    with pytest.raises(StateInUse, match="stop the sandbox first"):
        remove_state(settings)
    assert data_dir.exists()


def test_run_fresh_is_refused_with_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "var" / "pgdata"
    data_dir.mkdir(parents=True)
    config = tmp_path / "vpnbot.toml"
    config.write_text("[telegram]\nenabled = false\n")
    code = supervisor.main(["run", "--fresh", "--config", str(config)], environ={})
    assert code == 78
    assert "refused: a config file is in use" in capsys.readouterr().err
    assert data_dir.exists()


def test_run_fresh_is_refused_with_a_configured_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {"VPNBOT_DATABASE__DSN": "postgresql://u@127.0.0.1:1/db"}
    assert supervisor.main(["run", "--fresh"], environ=environ) == 78
    assert "database.dsn is set" in capsys.readouterr().err


def test_the_fake_cryptobots_invoices_are_kept_and_a_broken_file_set_aside(
    tmp_path: Path,
) -> None:
    path = cryptobot_state_path(settings_in(tmp_path))
    assert path == tmp_path / "var" / "sandbox-cryptobot.json"
    fake = FakeCryptoBot()
    invoice = fake.add_invoice(currency_type="crypto", asset="USDT", amount="5")
    write_atomically(path, encode(fake))
    again = FakeCryptoBot()
    assert load_state(again, path) is True
    assert again.invoices == {invoice["invoice_id"]: invoice}

    path.write_text('{"version": 1, "invoices": "many"}')
    with capture_logs() as logs:
        assert load_state(FakeCryptoBot(), path) is False
    assert [e["log_level"] for e in logs if e.get("operation") == "restore"] == ["warning"]
    assert path.with_name(path.name + ".unreadable").exists()


def test_run_fresh_removes_the_sandboxs_state_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_in(tmp_path)
    data_dir = tmp_path / "var" / "pgdata"
    data_dir.mkdir(parents=True)
    telegram_state_path(settings).write_text("{}")
    assert supervisor._start_afresh(None, settings) is True
    assert not data_dir.exists() and not telegram_state_path(settings).exists()
    assert "removed" in capsys.readouterr().err
    assert supervisor._start_afresh(None, settings) is True  # nothing left: nothing to do
    assert "nothing (no state yet)" in capsys.readouterr().err
