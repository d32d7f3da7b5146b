"""The sandbox's fake peers across restarts: the fake Marzban's users kept (their
subscription links still open), and the fakes on stable ports beside the emulator's, a free
one with a warning when that is taken."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from runtime.config import Settings
from runtime.sandbox import remove_state
from runtime.sandbox._sandbox import SandboxPorts, start_fake
from runtime.sandbox._state import encode, keep_saved, load_state, marzban_state_path
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban

PASSWORD = "panel-password"


def settings_in(directory: Path) -> Settings:
    return Settings.model_validate({"database": {"data_dir": str(directory / "var" / "pgdata")}})


async def login(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    answer = await client.post(
        f"{url}/api/admin/token", data={"username": "admin", "password": PASSWORD}
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def create(client: httpx.AsyncClient, url: str, name: str, **fields: Any) -> Any:
    body = {"username": name, "proxies": {"vless": {}}, "inbounds": {}, **fields}
    answer = await client.post(f"{url}/api/user", json=body, headers=await login(client, url))
    assert answer.status_code == 200, answer.text
    return answer.json()


def reloaded(panel: FakeMarzban) -> FakeMarzban:
    """A new panel given ``panel``'s snapshot as a file would give it back."""
    again = FakeMarzban(admin_password=PASSWORD)
    again.restore(json.loads(encode(panel)))
    return again


async def test_a_restored_panel_serves_the_subscription_links_it_issued_before() -> None:
    before = FakeMarzban(admin_password=PASSWORD)
    async with httpx.AsyncClient(timeout=30) as client:
        async with before.running() as url:
            user = await create(client, url, "u_1_1", expire=2_000_000_000, data_limit=10**9)
            before.use_traffic("u_1_1", 12345)
            link = user["subscription_url"]
            first = await client.get(f"{url}{link}")
        assert first.status_code == 200

        after = reloaded(before)
        assert after.users == before.users
        async with after.running() as url:
            again = await client.get(f"{url}{link}")
            assert again.status_code == 200
            assert again.text == first.text  # the same proxies and credentials
            assert "download=12345" in again.headers["subscription-userinfo"]
            assert "expire=2000000000" in again.headers["subscription-userinfo"]
            # the API answers the user as before, after a new login
            answer = await client.get(f"{url}/api/user/u_1_1", headers=await login(client, url))
            assert answer.json()["used_traffic"] == 12345
            assert answer.json()["data_limit"] == 10**9
        # a panel that was not restored does not know the link
        async with FakeMarzban(admin_password=PASSWORD).running() as url:
            assert (await client.get(f"{url}{link}")).status_code == 404


def test_a_snapshot_is_bounded_and_keeps_the_lifetime_traffic() -> None:
    panel = FakeMarzban(admin_password=PASSWORD)
    clock = iter(range(1_000, 2_000))
    panel.clock = lambda: float(next(clock))
    for n in range(5):
        panel.add_user(f"user_{n}")
    for used in (10, 20, 30):
        panel.set_used_traffic("user_4", used)
        panel.users["user_4"]["reset_logs"].append(used)
    data = panel.snapshot(keep=2)
    assert [u["username"] for u in data["users"]] == ["user_3", "user_4"]
    assert data["users"][1]["reset_logs"] == [60]
    assert panel.users["user_4"]["reset_logs"] == [10, 20, 30]
    assert panel.snapshot(keep=0)["users"] == []


def bad_snapshots(good: dict[str, Any]) -> Iterator[Any]:
    def changed(**user_fields: Any) -> dict[str, Any]:
        return {**good, "users": [{**good["users"][0], **user_fields}]}

    yield []
    yield {**good, "version": 2}
    yield {**good, "secret_key": None}
    yield {**good, "secret_key": "short"}
    yield {**good, "users": "many"}
    yield {**good, "users": [good["users"][0], good["users"][0]]}
    yield {**good, "users": [{"username": "x_1"}]}
    yield changed(username="no spaces allowed")
    yield changed(proxies={"wireguard": {}})
    yield changed(proxies={"vless": {"id": 7, "flow": ""}})
    yield changed(status="paused")
    yield changed(used_traffic=-1)
    yield changed(expire="tomorrow")
    yield changed(reset_logs=[True])
    yield changed(excluded={"trojan": ["Trojan Websocket TLS"]})
    yield changed(extra_field=1)
    yield {**good, "users": [good["users"][0]] * 10_001}


def test_bad_data_is_refused_and_changes_nothing() -> None:
    source = FakeMarzban(admin_password=PASSWORD)
    source.add_user("kept_1", expire=2_000_000_000)
    good = json.loads(encode(source))
    panel = FakeMarzban(admin_password=PASSWORD)
    mine = panel.add_user("mine_1")
    link = panel._answer(mine)["subscription_url"]
    users, revision = json.loads(json.dumps(panel.users)), panel.revision
    for bad in bad_snapshots(good):
        with pytest.raises(ValueError):
            panel.restore(bad)
        assert panel.users == users and panel.revision == revision, bad
        assert panel._subscriber(link.rsplit("/", 1)[1]) is not None
    panel.restore(good)
    assert list(panel.users) == ["kept_1"] and panel.revision > revision


async def test_changes_through_the_api_are_saved_and_read_back(tmp_path: Path) -> None:
    path = marzban_state_path(settings_in(tmp_path))
    assert path == tmp_path / "var" / "sandbox-marzban.json"
    panel = FakeMarzban(admin_password=PASSWORD)
    writes = trio.Semaphore(0, max_value=1000)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        panel.running() as url,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(lambda: keep_saved(panel, path, pause=0.01, on_saved=writes.release))
        with trio.fail_after(30):
            await writes.acquire()  # the state as it is at the start
        await create(client, url, "saved_1")
        with trio.fail_after(30):
            await writes.acquire()
        assert "saved_1" in path.read_text()
        headers = await login(client, url)
        put = await client.put(f"{url}/api/user/saved_1", json={"note": "n"}, headers=headers)
        assert put.status_code == 200
        nursery.cancel_scope.cancel()  # the last change is saved on the way out
    again = FakeMarzban(admin_password=PASSWORD)
    assert load_state(again, path) is True
    assert again.users["saved_1"]["note"] == "n"


def test_run_fresh_removes_the_panels_state(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    path = marzban_state_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.with_name(path.name + ".unreadable").write_text("{")
    assert set(remove_state(settings)) == {path, path.with_name(path.name + ".unreadable")}
    assert not path.exists()


def test_the_fakes_ports_are_beside_the_emulators() -> None:
    assert (SandboxPorts().panel, SandboxPorts().cryptobot) == (8082, 8083)
    assert (SandboxPorts(9000).panel, SandboxPorts(9000).cryptobot) == (9001, 9002)
    assert (SandboxPorts(0).panel, SandboxPorts(0).cryptobot) == (0, 0)
    assert SandboxPorts(65535).panel == 0


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_fake_serves_on_the_port_given_and_refuses_one_in_use(taken: int) -> None:
    port = free_port()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: FakeCryptoBot().serve(port=port, task_status=task_status)
        )
        assert url == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.post(f"{url}/api/getMe")).status_code == 401
        with pytest.raises(OSError):
            await nursery.start(
                lambda task_status: FakeCryptoBot().serve(port=taken, task_status=task_status)
            )
        nursery.cancel_scope.cancel()


async def test_a_taken_port_gives_a_free_one_and_one_warning(taken: int) -> None:
    async with trio.open_nursery() as nursery:
        with capture_logs() as logs:
            url = await start_fake(nursery, FakeMarzban(), taken, "the fake Marzban panel")
        assert url.startswith("http://127.0.0.1:") and url != f"http://127.0.0.1:{taken}"
        (line,) = [e for e in logs if e.get("operation") == "start_fake"]
        assert line["log_level"] == "warning" and line["port"] == taken
        assert "will not open" in line["event"]
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(f"{url}/api/system")).status_code == 401
        nursery.cancel_scope.cancel()
