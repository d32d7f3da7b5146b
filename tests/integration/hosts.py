"""Hosts for the multi-instance tests: one network namespace per instance, on a bridge.

Each host is a namespace made with iproute2 (``ip netns add``), its end of a veth pair on
a private /24 whose other ends join a bridge in the root namespace. The root namespace
holds the first address of the subnet; the peers (PostgreSQL, the Telegram emulator, the
fake panel and payment provider) and the load balancer are reached there. Every name
carries a random tag, so two test processes never collide, and everything made here is
removed on the way out, however the test ends. Nothing is routed: the subnet exists on
this machine only.

``partition`` drops a host's traffic to one port of the root namespace (and, if asked, the
answers from it) with nftables, inside the host's own namespace, as a firewall on that host
would.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


class HostsUnavailable(Exception):
    """This machine cannot make network namespaces (not root, no iproute2, no support)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec`` execs it: the pid
        of the process started is the program's own)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def partition(self, address: str, port: int, *, both_ways: bool = False) -> None:
        """Drop every packet this host sends to ``address:port`` (TCP), until ``heal``;
        ``both_ways`` drops what comes back from there too. The rules match packets, not
        connections: the connections already open are cut as well as new ones."""
        inbound = (
            "  chain in {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {address} tcp sport {port} drop\n"
            "  }\n"
            if both_ways
            else ""
        )
        ruleset = (
            "table inet partition {\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {address} tcp dport {port} drop\n"
            "  }\n"
            f"{inbound}"
            "}\n"
        )
        subprocess.run(
            self.command(["nft", "-f", "-"]), input=ruleset, text=True, check=True, timeout=30
        )

    def heal(self) -> None:
        subprocess.run(
            self.command(["nft", "delete", "table", "inet", "partition"]), check=True, timeout=30
        )


@dataclass(frozen=True)
class Network:
    gateway: str
    """The root namespace's address on the bridge: where the peers and the balancer are."""
    hosts: list[Host]


def unavailable_reason(*, firewall: bool = False) -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if firewall and shutil.which("nft") is None:
        return "nftables (nft) is not installed"
    return None


@contextmanager
def hosts(count: int) -> Iterator[Network]:
    """``count`` hosts on one bridge; all removed on exit. Raises ``HostsUnavailable`` when
    the machine refuses the first namespace."""
    reason = unavailable_reason()
    if reason is not None:
        raise HostsUnavailable(reason)
    tag = secrets.token_hex(3)
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
    bridge = f"vbr{tag}"
    namespaces: list[str] = []
    made_bridge = False
    try:
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except RuntimeError as exc:
            raise HostsUnavailable(str(exc)) from None
        made_bridge = True
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        made: list[Host] = []
        for i in range(count):
            namespace = f"vpnbot-{tag}-{i}"
            try:
                _ip("netns", "add", namespace)
            except RuntimeError as exc:
                raise HostsUnavailable(str(exc)) from None
            namespaces.append(namespace)
            outside, inside = f"vb{tag}{i}", f"vb{tag}{i}h"
            address = f"{subnet}.{i + 2}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            made.append(Host(namespace, address))
        yield Network(f"{subnet}.1", made)
    finally:
        # deleting a namespace deletes the veth end inside it, and so its pair
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        if made_bridge:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)
