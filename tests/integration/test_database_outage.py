"""The database goes away under a running service and comes back: no restart needed."""

from __future__ import annotations

import signal
from pathlib import Path

from runtime.storage import EmbeddedPostgres

from .test_process import actor, free_port, get_status, start, wait_for


def test_a_database_outage_degrades_the_service_which_recovers_by_itself(
    tmp_path: Path,
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = server.start_blocking()
    port = free_port()
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

[actors.database]
interval_seconds = 0.3
min_sleep_on_failure_seconds = 0.3
"""
    )
    process = start(config, tmp_path)
    try:
        wait_for(lambda: (d := get_status(port)) is not None and d["state"] == "healthy")
        server.stop_blocking()

        def degraded() -> bool:
            document = get_status(port)
            return document is not None and document["state"] == "degraded"

        wait_for(degraded, timeout=30)
        document = get_status(port)
        assert document is not None
        database = actor(document, "database")
        assert database["state"] == "running" and database["degraded"]
        assert database["last_failure"]["type"] == "infra_error"

        server.start_blocking()
        wait_for(lambda: (d := get_status(port)) is not None and d["state"] == "healthy", 30)
        assert actor(get_status(port) or {}, "database")["restarts"] == 0
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        server.stop_blocking()
