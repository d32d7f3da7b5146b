"""Recovery benchmark: a database outage under a running `vpnbot run`, seen by its admins.

    .venv/bin/python bench/database_outage_bench.py [--quick] [--code DIR]

Starts its own embedded PostgreSQL in a temporary directory and `vpnbot run` against it
(Telegram off, the workers polling every second so that each meets the outage, their
pauses after a failure left at their defaults: auto_renewal and reconciliation 300 s),
with an alert webhook on loopback and `degraded_after_seconds = 10`. It stops the
database for the outage, starts it again and prints, for every actor that was degraded,
how long after the database was back it stopped being reported degraded, then the alerts
admins got. ``--code`` runs another checkout of the project (an older commit, to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from runtime.storage import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]

WORKERS = (
    "activation_worker",
    "fast_expiry_cleanup",
    "crypto_payment_watcher",
    "auto_renewal",
    "trial_notifications",
    "expiry_notifications",
    "reconciliation",
)
WATCH_AFTER = 400.0
"""Seconds to wait for every actor to clear, past the workers' longest default pause."""


class AlertInbox:
    """The alert webhook: keeps the key of every alert posted to it."""

    def __init__(self) -> None:
        keys: list[str] = []
        self.keys = keys

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                keys.append(json.loads(self.rfile.read(length))["key"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(port: int) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json())
    except httpx.HTTPError:
        return None


def config(port: int, dsn: str, alerts_url: str) -> str:
    workers = "".join(f"[actors.{name}]\ninterval_seconds = 1\n" for name in WORKERS)
    return f"""
[service]
log_format = "json"
[http]
port = {port}
[http.public]
port = 0
[telegram]
enabled = false
[database]
dsn = "{dsn}"
auto_migrate = true
connect_timeout_seconds = 2
[alerts]
degraded_after_seconds = 10
[alerts.webhook]
url = "{alerts_url}"
{workers}"""


def wait_until(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise SystemExit(f"gave up after {seconds:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10 s outage instead of 30 s")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to run")
    args = parser.parse_args()
    outage = 10.0 if args.quick else 30.0
    inbox = AlertInbox()
    with tempfile.TemporaryDirectory(prefix="vpnbot-outage-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        dsn = server.start_blocking()
        port = free_port()
        path = Path(tmp) / "vpnbot.toml"
        path.write_text(config(port, dsn, inbox.url))
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONPATH"] = str(args.code)
        process = subprocess.Popen(
            [sys.executable, str(args.code / "supervisor.py"), "run", "--config", str(path)],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: (d := status(port)) is not None and d["state"] == "healthy", 60)
            server.stop_blocking()
            time.sleep(outage)
            document = status(port) or {"actors": []}
            degraded = [a["name"] for a in document["actors"] if a["degraded"]]
            server.start_blocking()
            back = time.monotonic()
            cleared: dict[str, float] = {}
            while len(cleared) < len(degraded) and time.monotonic() - back < WATCH_AFTER:
                for actor in (status(port) or {"actors": []})["actors"]:
                    name = actor["name"]
                    if name in degraded and not actor["degraded"] and name not in cleared:
                        cleared[name] = time.monotonic() - back
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            server.stop_blocking()
    print(f"database away for {outage:g} s; degraded while it was: {len(degraded)} actors")
    print("  actor                    degraded until, after the database was back")
    for name in degraded:
        seconds = cleared.get(name)
        shown = f"{seconds:6.1f} s" if seconds is not None else f"> {WATCH_AFTER:g} s"
        print(f"  {name:24} {shown}")
    print(f"alerts: {len(inbox.keys)}")
    for key in inbox.keys:
        print(f"  {key}")


if __name__ == "__main__":
    main()
