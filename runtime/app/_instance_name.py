"""This process's default instance id, from the host name and its systemd unit."""

from __future__ import annotations

import re
import socket
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._@/-]+")


def systemd_unit(cgroup: str) -> str | None:
    """The service unit a process runs in, from ``/proc/self/cgroup``'s text."""
    for line in cgroup.splitlines():
        fields = line.split(":", 2)  # hierarchy:controllers:path
        if len(fields) != 3:
            continue
        path = fields[2]
        units = [part for part in path.split("/") if part.endswith(".service")]
        if units:
            return units[-1].removesuffix(".service")
    return None


def default_instance_id(
    *, hostname: str | None = None, cgroup_file: Path = Path("/proc/self/cgroup")
) -> str:
    """``<host name>/<systemd unit>``, or ``<host name>/vpnbot`` outside a service."""
    try:
        unit = systemd_unit(cgroup_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        unit = None
    host = hostname if hostname is not None else socket.gethostname()
    value = f"{host or 'localhost'}/{unit or 'vpnbot'}"
    return _UNSAFE.sub("-", value).strip("-")[:100] or "vpnbot"
