"""HAProxy (Debian's package) in the root namespace: the load balancer in front of the
instances, and the doors through which the hosts reach the peers of the root namespace.

- ``public``: HTTP, round robin over the instances' public listeners, each health-checked
  on its operator listener's ``/readyz``; a request whose connection fails is sent to
  another instance (``option redispatch``). The Telegram webhook and the payment webhooks
  come in here.
- ``forwards``: plain TCP from ``gateway:port`` to a peer listening on loopback or on a
  Unix socket (the test PostgreSQL listens on a socket only).

It runs in the foreground (``-db``) as a child of the test, stopped by its pid.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .processes import free_port_on


def unavailable_reason() -> str | None:
    if shutil.which("haproxy") is None:
        return "HAProxy is not installed (Debian: apt-get install haproxy)"
    return None


def _config(
    gateway: str,
    public_port: int,
    backends: Sequence[tuple[str, int, int]],
    forwards: Mapping[int, str],
) -> str:
    lines = [
        "global",
        "  maxconn 2000",
        "defaults",
        "  timeout connect 2s",
        "  timeout client 60s",
        "  timeout server 60s",
        "  timeout check 2s",
        "  retries 3",
        "frontend public",
        "  mode http",
        f"  bind {gateway}:{public_port}",
        "  default_backend instances",
        "backend instances",
        "  mode http",
        "  balance roundrobin",
        "  option redispatch",
        "  option httpchk GET /readyz",
        "  http-check expect status 200",
    ]
    for i, (address, public, operator) in enumerate(backends):
        lines.append(
            f"  server i{i} {address}:{public} check port {operator} inter 300ms fall 2 rise 1"
        )
    for port, target in forwards.items():
        lines += [
            f"listen forward{port}",
            "  mode tcp",
            f"  bind {gateway}:{port}",
            f"  server peer {target}",
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def haproxy(
    directory: Path,
    gateway: str,
    backends: Sequence[tuple[str, int, int]],
    forwards: Mapping[str, str],
) -> Iterator[tuple[str, dict[str, int]]]:
    """Run HAProxy; yields the balancer's URL and, per forward name, the port that reaches
    it on ``gateway``. ``backends``: (address, public port, operator port) per instance;
    ``forwards``: name -> ``host:port`` or a Unix socket's absolute path."""
    public_port = free_port_on(gateway)
    ports = {name: free_port_on(gateway) for name in forwards}
    config = directory / "haproxy.cfg"
    config.write_text(
        _config(gateway, public_port, backends, {ports[n]: t for n, t in forwards.items()})
    )
    check = subprocess.run(
        ["haproxy", "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its config: {check.stderr}\n{config.read_text()}")
    log = (directory / "haproxy.log").open("w")
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield f"http://{gateway}:{public_port}", ports
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
