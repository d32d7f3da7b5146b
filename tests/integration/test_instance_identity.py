"""Two live processes with one instance id: the second is refused, the first runs on.

Both are started by hand on one host with no ``service.instance_id``: both default to
``<host name>/<unit or vpnbot>``, the case the default makes easy to get wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.app._identity import default_instance_id
from runtime.app.exit_codes import EX_CONFIG
from runtime.storage import Database
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.telegram import TelegramEmulator

from .processes import CRYPTO_TOKEN, PANEL_PASSWORD, PANEL_USER, TOKEN, Vpnbot, rows, write_config
from .test_process import free_port


async def test_a_second_live_process_with_the_same_instance_id_is_refused(
    db: Database, database_dsn: str, tmp_path: Path
) -> None:
    emulator = TelegramEmulator(TOKEN)
    panel = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    crypto = FakeCryptoBot(CRYPTO_TOKEN)
    async with emulator.running(), panel.running(), crypto.running():
        ports = [free_port(), free_port()]
        configs = [
            write_config(
                tmp_path / f"p{i}.toml",
                port=port,
                dsn=database_dsn,
                telegram=emulator.url,
                panel=panel.url,
                crypto=crypto.url,
                instance=None,
            )
            for i, port in enumerate(ports)
        ]
        first = Vpnbot(configs[0], tmp_path / "first.log", ports[0])
        second: Vpnbot | None = None
        try:
            await first.wait_ready()
            second = Vpnbot(configs[1], tmp_path / "second.log", ports[1])
            code = await second.wait(120)
            assert code == EX_CONFIG, second.tail()
            assert await first.ready()
        finally:
            if second is not None:
                await second.stop()
            assert await first.stop() == 0, first.tail()

    instance = default_instance_id()
    refusal = [
        json.loads(line)
        for line in (tmp_path / "second.log").read_text().splitlines()
        if '"cannot start"' in line
    ]
    (line,) = refusal
    assert line["exit_code"] == EX_CONFIG
    assert f"instance id {instance!r} is in use by another process" in line["reason"]
    assert "service.instance_id" in line["reason"] and "it is alive" in line["reason"]
    # the refused process took nothing over: every lease had one tenure, the first's
    leases = await rows(db, "select holder, fencing_token from leases")
    assert leases and all(r["holder"].startswith(f"{instance}:") for r in leases)
    assert {r["fencing_token"] for r in leases} == {1}
