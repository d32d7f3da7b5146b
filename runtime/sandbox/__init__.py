"""The sandbox: the whole product on one machine with local peers.

``vpnbot run`` without a config file runs the real runtime (supervisor, bot, workers,
HTTP endpoint, embedded PostgreSQL) against local stand-ins for everything outside: the
Telegram emulator, a fake Marzban panel and a fake CryptoBot. Only the peers are local;
every code path is production's. With a config file nothing sandbox-only runs.
"""

from ._sandbox import SandboxPorts, run_sandbox, sandbox_settings
from ._state import StateInUse, remove_state

__all__ = ["SandboxPorts", "StateInUse", "remove_state", "run_sandbox", "sandbox_settings"]
