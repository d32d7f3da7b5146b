"""The ports a start binds before anything slow, so a port in use ends it at once, by name.

``vpnbot run`` binds its listening sockets right after reading the configuration, before the
embedded PostgreSQL starts: a port that cannot be bound is a clear exit (``EX_OSERR``)
naming the port and the setting or flag that changes it, not a listener that fails later
while the rest of the process runs on. The listeners serve these sockets (each start of a
listener gets a duplicate, so a listener restarted by its supervisor keeps the port).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.config import Settings


@dataclass(frozen=True)
class PortUse:
    """A port the process listens on, and how an operator changes it."""

    name: str
    what: str
    host: str
    port: int
    change: str


class PortUnavailable(Exception):
    """A port of ``use`` could not be bound."""

    def __init__(self, use: PortUse, error: OSError) -> None:
        reason = error.strerror or str(error)
        super().__init__(
            f"cannot listen on {use.host}:{use.port} ({use.what}): {reason}; "
            f"choose another port with {use.change}"
        )
        self.use = use


def http_ports(settings: Settings) -> list[PortUse]:
    """The listeners of ``[http]`` that are enabled."""
    http = settings.http
    uses = []
    if http.enabled:
        uses.append(
            PortUse(
                "operator",
                "the operator listener",
                http.host,
                http.port,
                "[http] port in the config file or VPNBOT_HTTP__PORT",
            )
        )
    if http.public.enabled:
        uses.append(
            PortUse(
                "public",
                "the public listener",
                http.public.host,
                http.public.port,
                "[http.public] port in the config file or VPNBOT_HTTP__PUBLIC__PORT",
            )
        )
    return uses


class BoundPorts:
    """Sockets bound at start, by name, until ``close``."""

    def __init__(self) -> None:
        self._sockets: dict[str, socket.socket] = {}

    def bind(self, uses: list[PortUse]) -> None:
        """Bind every port of ``uses``; raises ``PortUnavailable`` for the first that fails
        (those bound before stay bound until ``close``)."""
        from runtime.web._server import listening_socket

        for use in uses:
            try:
                self._sockets[use.name] = listening_socket(use.host, use.port)
            except OSError as exc:
                raise PortUnavailable(use, exc) from exc

    def get(self, name: str) -> socket.socket | None:
        return self._sockets.get(name)

    def port(self, name: str) -> int | None:
        """The port ``name`` is bound to (the one the system chose for port 0)."""
        sock = self._sockets.get(name)
        return None if sock is None else int(sock.getsockname()[1])

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
