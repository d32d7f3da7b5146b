"""The sandbox's state on disk: the local peers' side kept beside the database.

The embedded PostgreSQL keeps the bot's side under ``database.data_dir`` (``var/pgdata``);
the Telegram emulator's (users, chats, pending updates, the update counter) is kept in
``sandbox-telegram.json`` in the same parent directory, the fake CryptoBot's invoices in
``sandbox-cryptobot.json``, the fake Marzban panel's users (their expiry, traffic and
proxies) and its subscription secret, so every subscription link in the chats still opens,
in ``sandbox-marzban.json``. All survive a restart; ``vpnbot run --fresh`` removes them.
A file is written whole to a temporary file and renamed over the old one, so a crash leaves
the old file or the new one, never half of one. A file that cannot be read is logged and
set aside (renamed ``.unreadable``): that peer starts afresh.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from runtime.logs import get_logger

if TYPE_CHECKING:
    from runtime.config import Settings

TELEGRAM_STATE = "sandbox-telegram.json"
CRYPTOBOT_STATE = "sandbox-cryptobot.json"
MARZBAN_STATE = "sandbox-marzban.json"
MAX_STATE_BYTES = 64 * 1024 * 1024
"""A larger file is not read: the emulator's retention keeps it far smaller."""
SAVE_PAUSE = 0.5
"""Seconds between a change and its save: a burst of changes is written once."""

_log = get_logger("sandbox")


class Kept(Protocol):
    """A peer whose state is kept (the Telegram emulator, the fake CryptoBot and Marzban)."""

    revision: int
    """Grows with every change."""

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, data: Any) -> None:
        """Raises ``ValueError`` (or a subclass) for data it cannot take, changing nothing."""

    async def wait_changed(self, revision: int) -> int: ...


def state_dir(settings: Settings) -> Path:
    """Where the sandbox keeps its state: the parent of the embedded server's data dir."""
    return Path(settings.database.data_dir).expanduser().parent


def telegram_state_path(settings: Settings) -> Path:
    return state_dir(settings) / TELEGRAM_STATE


def cryptobot_state_path(settings: Settings) -> Path:
    return state_dir(settings) / CRYPTOBOT_STATE


def marzban_state_path(settings: Settings) -> Path:
    return state_dir(settings) / MARZBAN_STATE


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file beside it, synced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_state(peer: Kept, path: Path) -> bool:
    """Restore ``peer`` from ``path``. False when there is none or it cannot be read
    (logged, set aside): the peer then starts empty."""
    from runtime.testing.telegram import EmulatorError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    except OSError as exc:
        return _unreadable(path, f"cannot read it: {exc}")
    if size > MAX_STATE_BYTES:
        return _unreadable(path, f"{size} bytes, more than {MAX_STATE_BYTES}")
    try:
        data = json.loads(path.read_bytes())
        peer.restore(data)
    except (OSError, ValueError, EmulatorError, RecursionError) as exc:
        return _unreadable(path, str(exc)[:200])
    _log.info("sandbox state restored", operation="restore", path=str(path), outcome="success")
    return True


def _unreadable(path: Path, reason: str) -> bool:
    aside = path.with_name(path.name + ".unreadable")
    try:
        os.replace(path, aside)
    except OSError:
        aside = path
    _log.warning(
        "sandbox state not restored: the state file is unreadable; starting afresh",
        operation="restore",
        path=str(path),
        set_aside=str(aside),
        reason=reason,
        outcome="skipped",
    )
    return False


def encode(peer: Kept) -> bytes:
    return json.dumps(peer.snapshot(), separators=(",", ":"), ensure_ascii=False).encode()


async def keep_saved(
    peer: Kept,
    path: Path,
    *,
    pause: float = SAVE_PAUSE,
    on_saved: Callable[[], None] | None = None,
) -> None:
    """Save ``peer``'s state now, after every change (a burst once), and once more when
    cancelled, until cancelled. ``on_saved`` is told of every write."""
    written = b""
    revision = -1

    async def save() -> None:
        nonlocal written
        data = encode(peer)
        if data != written:
            try:
                await trio.to_thread.run_sync(write_atomically, path, data)
            except OSError as exc:
                _log.warning(
                    "sandbox state not saved",
                    operation="save",
                    path=str(path),
                    error=str(exc)[:200],
                    outcome="failed",
                )
                return
            written = data
            if on_saved is not None:
                on_saved()

    try:
        while True:
            revision = await peer.wait_changed(revision)
            await trio.sleep(pause)
            revision = peer.revision
            await save()
    finally:
        with trio.CancelScope(shield=True):
            await save()


class StateInUse(Exception):
    """The sandbox's database is running: its state cannot be removed under it."""


def server_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running on ``data_dir``, if one is."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first)
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def remove_state(settings: Settings) -> list[Path]:
    """Remove the sandbox's state (the embedded server's data dir and the peers' files);
    returns what was removed. ``StateInUse`` while a server runs on that data dir."""
    removed = []
    data_dir = Path(settings.database.data_dir).expanduser()
    pid = server_pid(data_dir)
    if pid is not None:
        raise StateInUse(
            f"the sandbox's PostgreSQL (pid {pid}) is running on {data_dir}: stop the sandbox first"
        )
    if data_dir.exists():
        shutil.rmtree(data_dir)
        removed.append(data_dir)
    files = (
        telegram_state_path(settings),
        cryptobot_state_path(settings),
        marzban_state_path(settings),
    )
    for path in (p for f in files for p in (f, f.with_name(f.name + ".unreadable"))):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
