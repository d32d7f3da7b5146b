"""The database goes away under a running service and comes back: no restart needed, one
alert for the one cause, and every actor's degradation follows the database back."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from runtime.storage import EmbeddedPostgres
from runtime.workers import NAMES
from runtime.workers.notifier import NAME as NOTIFIER
from runtime.workers.traffic_reminders import NAME as TRAFFIC_REMINDERS

from .processes import PATIENCE
from .test_process import Receiver, actor, free_port, get_status, log_lines, start, wait_for
from .test_process import receiver as receiver  # the alert webhook fixture

WORKERS = tuple(name for name in NAMES if name not in (NOTIFIER, TRAFFIC_REMINDERS))
"""Telegram is off; no plan has a traffic limit, so the traffic reminders never read."""
DATABASE_USERS = ("database", *WORKERS)
"""Every actor that reaches the database, and would each alert on its own if nothing tied
their degradation to the database's."""
MIN_SLEEP_ON_FAILURE = 3600
"""The workers' pause after a failed iteration: only the database's probe can clear them."""
DEGRADED_AFTER = 1


def write_config(tmp_path: Path, port: int, dsn: str, alerts_url: str) -> Path:
    workers = "".join(
        f"""
[actors.{name}]
interval_seconds = 0.3
min_sleep_on_failure_seconds = {MIN_SLEEP_ON_FAILURE}
"""
        for name in WORKERS
    )
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f"""
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
degraded_after_seconds = {DEGRADED_AFTER}
throttle_seconds = 3600

[alerts.webhook]
url = "{alerts_url}"

[actors.database]
interval_seconds = 0.3
min_sleep_on_failure_seconds = 0.3
{workers}"""
    )
    return config


def suppressed_total(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = re.search(r"^vpnbot_alerts_suppressed_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_database_outage_is_one_alert_and_degraded_clears_when_it_is_back(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = server.start_blocking()
    port = free_port()
    process = start(write_config(tmp_path, port, dsn, receiver.url), tmp_path)
    try:
        wait_for(lambda: (d := get_status(port)) is not None and d["state"] == "healthy", PATIENCE)
        server.stop_blocking()

        def all_degraded() -> dict[str, Any] | None:
            document = get_status(port)
            if document is None:
                return None
            if all(actor(document, name)["degraded"] for name in DATABASE_USERS):
                return document
            return None

        document = wait_for(all_degraded, timeout=PATIENCE)
        every_one_degraded_at = time.monotonic()
        for name in DATABASE_USERS:
            state = actor(document, name)
            assert state["state"] == "running", name
            assert state["degraded_cause"] == "database", (name, state["degraded"])
            assert state["last_failure"]["type"] == "infra_error", name
        assert document["state"] == "degraded"

        # Each actor has now been degraded past the alert threshold. The alert for the cause
        # is re-submitted (and throttled) on every tick of the supervising loop: two more of
        # those, counted after the threshold, mean any alert of its own would have been due.
        wait_for(lambda: "degraded:database" in receiver.alert_keys(), timeout=PATIENCE)
        while time.monotonic() < every_one_degraded_at + DEGRADED_AFTER:
            time.sleep(0.1)
        ticks_before = suppressed_total(port)
        wait_for(lambda: suppressed_total(port) >= ticks_before + 2, timeout=PATIENCE)

        server.start_blocking()
        document = wait_for(
            lambda: (d := get_status(port)) is not None and d["state"] == "healthy" and d,
            timeout=120,  # far below the workers' hour-long pause after their failure
        )
        for name in DATABASE_USERS:
            state = actor(document, name)
            assert state["degraded"] is None and state["degraded_cause"] is None, name
            assert state["restarts"] == 0, name
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        server.stop_blocking()

    degraded_alerts = [key for key in receiver.alert_keys() if key.startswith("degraded:")]
    assert degraded_alerts == ["degraded:database"]
    alert = receiver.bodies[receiver.alert_keys().index("degraded:database")]
    assert alert["severity"] == "warning"
    assert alert["text"].startswith("the database is not accepting connections")
    assert "affected: " in alert["text"]  # those that had met it by then

    cleared: set[str] = set()
    for line in log_lines(stdout):
        if line.get("event") == "dependency answers again: degradation cleared":
            assert line["dependency"] == "database"
            cleared.update(line["actors"])
        elif line.get("operation") == "wakeups.listen" and line.get("reconnects", 0) > 0:
            cleared.add("wakeup_listener")  # it reconnects on its own, and may beat the probe
    # cleared by the database's probe, not by their own next iteration an hour away
    assert cleared == set(WORKERS)
