"""The Marzban backend against the fake panel on 127.0.0.1."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

import plugins.marzban as plugin
from plugins.marzban import MarzbanBackend, MarzbanSettings
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError
from runtime.plugin_api import ENTRY_POINT_GROUP, load_plugins
from runtime.plugin_api.vpn import AccountSpec
from runtime.testing.contract import BackendUnderTest, VpnBackendContract
from runtime.testing.fakes.marzban import FakeMarzban
from runtime.testing.links import fetch_configs

ADMIN = "bot-admin"
GIB = 2**30
PASSWORD = "pa55-SUPER-secret-word"


def make_settings(url: str, **changes: Any) -> MarzbanSettings:
    values: dict[str, Any] = {"base_url": url, "username": ADMIN, "password": PASSWORD}
    values.update(changes)
    return MarzbanSettings.model_validate(values)


def spec(name: str = "u_42_1", *, days: float = 30, **changes: Any) -> AccountSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, Any] = {
        "name": name,
        "expires_at": now + timedelta(days=days),
        "telegram_id": 42,
        "period_start": now - timedelta(days=1),
    }
    values.update(changes)
    return AccountSpec(**values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeMarzban]:
    panel = FakeMarzban(admin_username=ADMIN, admin_password=PASSWORD)
    async with panel.running():
        yield panel


@pytest.fixture
async def backend(fake: FakeMarzban) -> AsyncIterator[MarzbanBackend]:
    subject = MarzbanBackend(make_settings(fake.url))
    yield subject
    await subject.aclose()


class TestMarzbanContract(VpnBackendContract):
    @pytest.fixture
    async def subject(self, fake: FakeMarzban) -> AsyncIterator[BackendUnderTest]:
        made: list[MarzbanBackend] = []

        def make() -> MarzbanBackend:
            made.append(MarzbanBackend(make_settings(fake.url)))
            return made[-1]

        yield BackendUnderTest(
            make(), fake, secrets=[PASSWORD], make_fresh=make, use_traffic=fake.use_traffic
        )
        for backend in made:
            await backend.aclose()


# -- the whole life of an account -----------------------------------------------------------


async def test_lifecycle_create_extend_disable_delete(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    first = spec(days=30, traffic_limit_bytes=5 * 2**30, device_limit=2)
    account = await backend.ensure_account(first)
    stored = fake.users["u_42_1"]
    assert stored["expire"] == int(first.expires_at.timestamp())
    assert stored["data_limit"] == 5 * 2**30
    assert stored["status"] == "active"
    assert fake.user_inbounds("u_42_1") == {"vless": fake.inbounds["vless"]}  # every vless one
    [create] = fake.calls("POST", "/api/user")
    assert create.json()["inbounds"] == {}
    assert create.json()["proxies"] == {"vless": {}}
    assert account.reference == "u_42_1"
    assert account.access_url.startswith(fake.url.rstrip("/") + "/sub/")
    assert account.expires_at == first.expires_at
    vless_id = stored["proxies"]["vless"]["id"]

    later = spec(days=60, traffic_limit_bytes=None)
    renewed = await backend.ensure_account(later)
    assert renewed.expires_at == later.expires_at and renewed.enabled
    assert fake.users["u_42_1"]["expire"] == int(later.expires_at.timestamp())
    assert fake.users["u_42_1"]["data_limit"] is None  # unlimited
    [put] = fake.calls("PUT", "/api/user/u_42_1")
    assert "proxies" not in put.json()  # would hand the user new credentials
    assert fake.users["u_42_1"]["proxies"]["vless"]["id"] == vless_id

    await backend.disable("u_42_1")
    assert fake.users["u_42_1"]["status"] == "disabled"
    found = await backend.get_account("u_42_1")
    assert found is not None and not found.enabled

    await backend.delete("u_42_1")
    assert "u_42_1" not in fake.users
    assert await backend.get_account("u_42_1") is None


async def test_explicit_inbound_tags_and_proxy_settings(fake: FakeMarzban) -> None:
    settings = make_settings(
        fake.url,
        inbounds={"vless": ["VLESS TCP REALITY"], "vmess": []},
        proxy_settings={"vless": {"flow": "xtls-rprx-vision"}},
    )
    backend = MarzbanBackend(settings)
    try:
        await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    user = fake.users["u_42_1"]
    assert fake.user_inbounds("u_42_1") == {"vless": ["VLESS TCP REALITY"], "vmess": ["VMess TCP"]}
    assert user["proxies"]["vless"]["flow"] == "xtls-rprx-vision"


async def test_subscription_url_changes_every_second_and_old_ones_keep_working() -> None:
    now = [1_900_000_000.2]
    fake = FakeMarzban(admin_username=ADMIN, admin_password=PASSWORD, clock=lambda: now[0])
    async with fake.running():
        backend = MarzbanBackend(make_settings(fake.url))
        try:
            await backend.ensure_account(spec(days=30))
            one = await backend.get_account("u_42_1")
            same_second = await backend.get_account("u_42_1")
            now[0] += 1.0
            next_second = await backend.get_account("u_42_1")
        finally:
            await backend.aclose()
        assert one is not None and same_second is not None and next_second is not None
        assert one.access_url == same_second.access_url  # the token embeds whole seconds
        assert one.access_url != next_second.access_url
        assert one.reference == next_second.reference
        assert await fetch_configs(one.access_url) == await fetch_configs(next_second.access_url)


async def test_absolute_subscription_prefix_is_kept(fake: FakeMarzban) -> None:
    fake.subscription_prefix = "https://sub.example.com"
    backend = MarzbanBackend(make_settings(fake.url, subscription_base_url="https://x.test"))
    try:
        account = await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert account.access_url.startswith("https://sub.example.com/sub/")


async def test_relative_subscription_url_keeps_the_base_path() -> None:
    fake = FakeMarzban(admin_username=ADMIN, admin_password=PASSWORD, root_path="/panel/")
    async with fake.running():
        backend = MarzbanBackend(make_settings(fake.url.rstrip("/") + "/panel/"))
        elsewhere = MarzbanBackend(
            make_settings(fake.url + "/panel", subscription_base_url="https://sub.test/vpn/")
        )
        try:
            account = await backend.ensure_account(spec())
            other = await elsewhere.get_account("u_42_1")
        finally:
            await backend.aclose()
            await elsewhere.aclose()
        assert account.access_url.startswith(fake.url.rstrip("/") + "/panel/sub/")
        assert len(await fetch_configs(account.access_url)) == len(fake.inbounds["vless"])
        assert other is not None and other.access_url.startswith("https://sub.test/vpn/sub/")


async def test_the_subscription_serves_the_users_links_as_base64(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    account = await backend.ensure_account(spec(traffic_limit_bytes=5 * GIB))
    fake.use_traffic("u_42_1", 123)
    async with httpx.AsyncClient() as client:
        answer = await client.get(account.access_url)
        page = await client.get(account.access_url, headers={"Accept": "text/html"})
        forged = await client.get(account.access_url[:-3] + "abc")
    assert answer.status_code == 200
    links = base64.b64decode(answer.text).decode().splitlines()
    uuid = fake.users["u_42_1"]["proxies"]["vless"]["id"]
    assert len(links) == 2 and all(link.startswith(f"vless://{uuid}@") for link in links)
    assert f"download=123; total={5 * GIB}" in answer.headers["subscription-userinfo"]
    assert page.headers["content-type"].startswith("text/html")
    assert (forged.status_code, forged.json()) == (404, {"detail": "Not Found"})


async def test_past_expiry_answers_expired_and_not_enabled(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    await backend.ensure_account(spec())
    lapsed = await backend.ensure_account(spec(days=-1))
    assert fake.users["u_42_1"]["status"] == "expired"
    assert not lapsed.enabled


# -- traffic per period ---------------------------------------------------------------------


def renewal_of(first: AccountSpec, *, days: int = 60) -> AccountSpec:
    return replace(
        first,
        expires_at=first.expires_at + timedelta(days=days),
        period_start=first.period_start + timedelta(days=30),
    )


async def test_a_renewal_after_used_up_traffic_resets_usage_once(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    first = spec(traffic_limit_bytes=5 * GIB)
    await backend.ensure_account(first)
    fake.use_traffic("u_42_1", 5 * GIB)
    spent = await backend.get_account("u_42_1")
    assert spent is not None and spent.limited and not spent.enabled

    fake.requests.clear()
    renewed = renewal_of(first)
    account = await backend.ensure_account(renewed)
    assert account.enabled and not account.limited
    user = fake.users["u_42_1"]
    assert (user["used_traffic"], user["status"]) == (0, "active")
    assert user["expire"] == int(renewed.expires_at.timestamp())
    assert user["note"] == f"telegram_id 42\nvpnbot-period:{renewed.period}"
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/api/user"),
        ("GET", "/api/user/u_42_1"),
        ("PUT", "/api/user/u_42_1"),  # the values, and the mark opened
        ("POST", "/api/user/u_42_1/reset"),
        ("PUT", "/api/user/u_42_1"),  # the mark closed
    ]
    opened = fake.requests[2].json()["note"]
    assert opened.endswith(f"vpnbot-period:{renewed.period}/open:{5 * GIB}")
    assert (await client_json(fake, "u_42_1"))["lifetime_used_traffic"] == 5 * GIB

    fake.requests.clear()
    fake.use_traffic("u_42_1", GIB)
    await backend.ensure_account(renewed)  # a retry of the same period
    assert fake.users["u_42_1"]["used_traffic"] == GIB
    assert not fake.calls("POST", "/api/user/u_42_1/reset")


async def test_a_crash_after_the_reset_does_not_reset_again(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    first = spec(traffic_limit_bytes=5 * GIB)
    await backend.ensure_account(first)
    renewed = renewal_of(first)
    # The mark was opened with 3 GiB used, the reset ran, then the process died before
    # closing the mark; the user has used 1 GiB since.
    fake.users["u_42_1"]["note"] = f"telegram_id 42\nvpnbot-period:{renewed.period}/open:{3 * GIB}"
    fake.set_used_traffic("u_42_1", GIB)
    account = await backend.ensure_account(renewed)
    assert account.enabled
    assert fake.users["u_42_1"]["used_traffic"] == GIB
    assert fake.users["u_42_1"]["note"] == f"telegram_id 42\nvpnbot-period:{renewed.period}"
    assert not fake.calls("POST", "/api/user/u_42_1/reset")


async def test_a_crash_before_the_reset_resets_on_the_retry(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    first = spec(traffic_limit_bytes=5 * GIB)
    await backend.ensure_account(first)
    renewed = renewal_of(first)
    fake.users["u_42_1"]["note"] = f"vpnbot-period:{renewed.period}/open:{5 * GIB}"
    fake.set_used_traffic("u_42_1", 5 * GIB)
    account = await backend.ensure_account(renewed)
    assert account.enabled and fake.users["u_42_1"]["used_traffic"] == 0
    assert len(fake.calls("POST", "/api/user/u_42_1/reset")) == 1


async def test_an_unused_account_in_a_new_period_needs_no_reset(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    first = spec(traffic_limit_bytes=5 * GIB)
    await backend.ensure_account(first)
    renewed = renewal_of(first)
    await backend.ensure_account(renewed)
    assert not fake.calls("POST", "/api/user/u_42_1/reset")
    assert fake.users["u_42_1"]["note"].endswith(f"vpnbot-period:{renewed.period}")


async def test_an_account_from_before_periods_is_reset_once_and_keeps_its_note(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    fake.add_user("u_42_1", note="VIP, ask Anna", data_limit=5 * GIB, status="limited")
    fake.set_used_traffic("u_42_1", 5 * GIB)
    account = await backend.ensure_account(spec(traffic_limit_bytes=5 * GIB))
    assert account.enabled
    assert fake.users["u_42_1"]["used_traffic"] == 0
    assert fake.users["u_42_1"]["note"].startswith("VIP, ask Anna\nvpnbot-period:")


async def test_adoption_gives_a_user_without_inbounds_every_configured_one(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    fake.add_user("u_42_1", without_inbounds=True)
    vless_id = fake.users["u_42_1"]["proxies"]["vless"]["id"]
    assert fake.user_inbounds("u_42_1") == {"vless": []}
    account = await backend.ensure_account(spec())
    assert fake.user_inbounds("u_42_1") == {"vless": fake.inbounds["vless"]}
    assert fake.users["u_42_1"]["proxies"]["vless"]["id"] == vless_id  # same credentials
    assert len(await fetch_configs(account.access_url)) == len(fake.inbounds["vless"])
    [put] = fake.calls("PUT", "/api/user/u_42_1")
    assert put.json()["inbounds"] == {"vless": fake.inbounds["vless"]}
    assert "proxies" not in put.json()


async def test_adoption_adds_a_missing_proxy_type_and_keeps_the_others(
    fake: FakeMarzban,
) -> None:
    fake.add_user("u_42_1", proxies={"vmess": {}})
    vmess_id = fake.users["u_42_1"]["proxies"]["vmess"]["id"]
    settings = make_settings(fake.url, inbounds={"vless": ["VLESS TCP REALITY"]})
    backend = MarzbanBackend(settings)
    try:
        await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert fake.user_inbounds("u_42_1") == {
        "vmess": ["VMess TCP"],
        "vless": ["VLESS TCP REALITY"],
    }
    assert fake.users["u_42_1"]["proxies"]["vmess"]["id"] == vmess_id
    assert not fake.calls("GET", "/api/inbounds")  # explicit tags need no look-up


async def test_adoption_leaves_a_complete_user_alone(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    await backend.ensure_account(spec())
    fake.requests.clear()
    await backend.ensure_account(spec())
    [put] = fake.calls("PUT", "/api/user/u_42_1")
    assert "inbounds" not in put.json() and "proxies" not in put.json()
    assert not fake.calls("GET", "/api/inbounds")


async def client_json(fake: FakeMarzban, username: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        login = await client.post(
            "/api/admin/token", data={"username": ADMIN, "password": PASSWORD}
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        answer = await client.get(f"/api/user/{username}", headers=auth)
    body: dict[str, Any] = answer.json()
    return body


# -- the awkward paths ----------------------------------------------------------------------


async def test_expired_token_logs_in_again_once(fake: FakeMarzban, backend: MarzbanBackend) -> None:
    await backend.ensure_account(spec())
    fake.expire_tokens()
    account = await backend.get_account("u_42_1")
    assert account is not None
    assert len(fake.calls("POST", "/api/admin/token")) == 2
    gets = fake.calls("GET", "/api/user/u_42_1")
    assert len(gets) == 2  # refused with the old token, then answered
    assert gets[0].headers["authorization"] != gets[1].headers["authorization"]


async def test_token_with_a_lifetime_expires_and_is_renewed(fake: FakeMarzban) -> None:
    fake.token_lifetime = 0.05
    backend = MarzbanBackend(make_settings(fake.url))
    try:
        await backend.ensure_account(spec())
        await trio.sleep(0.06)
        assert await backend.get_account("u_42_1") is not None
    finally:
        await backend.aclose()
    assert len(fake.calls("POST", "/api/admin/token")) == 2


async def test_concurrent_calls_share_one_new_login(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    await backend.ensure_account(spec())
    fake.expire_tokens()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(backend.get_account, "u_42_1")
    assert len(fake.calls("POST", "/api/admin/token")) == 2


async def test_a_401_after_logging_in_again_is_not_retried_forever(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    await backend.health()
    fake.fail_next(
        401, body={"detail": "Could not validate credentials"}, times=10, path_prefix="/api/user"
    )
    with pytest.raises(DependencyError) as caught:
        await backend.get_account("u_42_1")
    assert not caught.value.transient
    assert len(fake.calls("POST", "/api/admin/token")) == 2
    assert len(fake.calls("GET", "/api/user")) == 2


async def test_wrong_password_is_a_permanent_failure_without_the_password(
    fake: FakeMarzban,
) -> None:
    fake.admin_password = "another-one"
    backend = MarzbanBackend(make_settings(fake.url))
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert not caught.value.transient
    assert "401" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert len(fake.calls("POST", "/api/admin/token")) == 1


async def test_existing_user_is_adopted_with_absolute_values(
    fake: FakeMarzban, backend: MarzbanBackend
) -> None:
    fake.add_user("u_42_1", expire=int(time.time()) + 3600, data_limit=1, status="disabled")
    wanted = spec(days=90, traffic_limit_bytes=2**40)
    with capture_logs() as logs:
        account = await backend.ensure_account(wanted)
    assert [(r.method, r.path) for r in fake.calls(path_prefix="/api/user")] == [
        ("POST", "/api/user"),
        ("GET", "/api/user/u_42_1"),
        ("PUT", "/api/user/u_42_1"),
    ]
    assert fake.calls("POST", "/api/user")[0].json()["username"] == "u_42_1"
    user = fake.users["u_42_1"]
    assert (user["expire"], user["data_limit"], user["status"]) == (
        int(wanted.expires_at.timestamp()),
        2**40,
        "active",
    )
    assert account.enabled and account.expires_at == wanted.expires_at
    assert any(entry["event"] == "account exists, adopting it" for entry in logs)


async def test_duplicates_are_case_sensitive_like_the_panel(fake: FakeMarzban) -> None:
    fake.add_user("U_42_1")
    backend = MarzbanBackend(make_settings(fake.url))
    try:
        await backend.ensure_account(spec("u_42_1"))
    finally:
        await backend.aclose()
    assert {"U_42_1", "u_42_1"} <= set(fake.users)
    assert not fake.calls("PUT")


async def test_validation_errors_are_permanent_and_readable(backend: MarzbanBackend) -> None:
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec("ab"))
    assert not caught.value.transient
    assert "422" in str(caught.value) and "username" in str(caught.value)


async def test_disabled_protocol_is_a_permanent_failure(fake: FakeMarzban) -> None:
    backend = MarzbanBackend(make_settings(fake.url, inbounds={"shadowsocks": []}))
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert not caught.value.transient
    assert "Protocol shadowsocks is disabled" in str(caught.value)


async def test_missing_users_are_fine_but_a_missing_route_is_not(
    fake: FakeMarzban,
) -> None:
    backend = MarzbanBackend(make_settings(fake.url))
    wrong = MarzbanBackend(make_settings(fake.url.rstrip("/") + "/wrong-prefix"))
    try:
        await backend.disable("nobody")
        await backend.delete("nobody")
        assert await backend.get_account("nobody") is None
        fake.fail_next(404, body={"detail": "Not Found"}, path_prefix="/api/user/")
        with pytest.raises(DependencyError) as caught:
            await backend.delete("nobody")
        assert not caught.value.transient
        with pytest.raises(DependencyError):
            await wrong.delete("nobody")
    finally:
        await backend.aclose()
        await wrong.aclose()


async def test_rate_limit_surfaces_retry_after(fake: FakeMarzban, backend: MarzbanBackend) -> None:
    await backend.health()
    fake.rate_limit_next(12)
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec())
    assert caught.value.transient
    assert caught.value.retry_after == 12


async def test_a_hanging_panel_times_out_as_transient(fake: FakeMarzban) -> None:
    backend = MarzbanBackend(make_settings(fake.url, timeout_seconds=0.2))
    try:
        with trio.fail_after(120):
            while True:  # logged in first; a busy machine may miss 0.2 s: try again
                try:
                    await backend.health()
                    break
                except DependencyError:
                    continue
        # answered after 3 s: a timeout that did not fire lets the call pass
        fake.delay_next(3, path_prefix="/api/user")
        with trio.fail_after(30), pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec())
    finally:
        await backend.aclose()
    assert caught.value.transient
    assert "timed out" in str(caught.value)


async def test_an_unreachable_panel_is_transient() -> None:
    backend = MarzbanBackend(make_settings("http://127.0.0.1:9"))
    try:
        with pytest.raises(DependencyError) as caught:
            await backend.health()
    finally:
        await backend.aclose()
    assert caught.value.transient


async def test_no_secret_in_logs_or_errors(fake: FakeMarzban, backend: MarzbanBackend) -> None:
    errors: list[str] = []
    with capture_logs() as logs:
        await backend.ensure_account(spec())
        fake.expire_tokens()
        await backend.ensure_account(spec(days=40))
        for status, times in ((500, 1), (401, 2), (403, 1), (429, 1)):
            fake.fail_next(status, body={"detail": "no"}, headers={"Retry-After": "1"}, times=times)
            with pytest.raises(DependencyError) as caught:
                await backend.get_account("u_42_1")
            errors.append(str(caught.value))
            errors.append(repr(caught.value))
    secrets = [PASSWORD, *fake.issued_tokens]
    assert len(fake.issued_tokens) >= 2
    text = "\n".join([*errors, *(repr(entry) for entry in logs)])
    assert any(entry["event"] == "token rejected, logging in again" for entry in logs)
    for secret in secrets:
        assert secret not in text
    assert PASSWORD not in repr(backend) and PASSWORD not in repr(make_settings(fake.url))


async def test_health_fails_on_bad_credentials(fake: FakeMarzban) -> None:
    backend = MarzbanBackend(make_settings(fake.url, password="wrong"))
    try:
        with pytest.raises(DependencyError):
            await backend.health()
    finally:
        await backend.aclose()


async def test_transport_passthrough() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/api/admin/token"):
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})
        return httpx.Response(200, json={"username": ADMIN, "is_sudo": True})

    backend = MarzbanBackend(
        make_settings("https://panel.test/base"), transport=httpx.MockTransport(answer)
    )
    try:
        await backend.health()
    finally:
        await backend.aclose()
    assert [str(r.url) for r in seen] == [
        "https://panel.test/base/api/admin/token",
        "https://panel.test/base/api/admin",
    ]
    assert seen[0].headers["content-type"] == "application/x-www-form-urlencoded"


async def test_the_fake_answers_like_the_panel(fake: FakeMarzban) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        anonymous = await client.get("/api/user/someone")
        assert (anonymous.status_code, anonymous.json()) == (401, {"detail": "Not authenticated"})
        login = await client.post(
            "/api/admin/token", data={"username": ADMIN, "password": PASSWORD}
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        bad = await client.post(
            "/api/user", json={"username": "a b", "proxies": {"vless": {}}}, headers=auth
        )
        assert bad.status_code == 422 and list(bad.json()["detail"]) == ["username"]
        bare = await client.post(
            "/api/user",
            json={"username": "bare", "proxies": {"vless": {}}, "expire": 0},
            headers=auth,
        )
        assert bare.json()["expire"] is None
        assert bare.json()["links"] == []  # no inbounds without "inbounds"
        await client.put("/api/user/bare", json={"status": "disabled"}, headers=auth)
        reset = await client.post("/api/user/bare/reset", headers=auth)
        assert reset.json()["status"] == "active"  # the panel's own slip, kept
        emptied = await client.put("/api/user/bare", json={"inbounds": {"vless": []}}, headers=auth)
        assert emptied.json()["inbounds"] == {"vless": []}  # [] on a PUT means none
        fake.expire_tokens()
        stale = await client.get("/api/user/bare", headers=auth)
        assert stale.json() == {"detail": "Could not validate credentials"}


# -- the hook -------------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None) -> Settings:
    tables = {} if table is None else {"marzban": table}
    return Settings.model_validate({"plugins": {"settings": tables}})


def test_hook_offers_nothing_when_unconfigured() -> None:
    assert plugin.vpnbot_vpn_backends(settings_with(None)) == []


def test_hook_builds_a_backend_from_its_table() -> None:
    table = {
        "base_url": "https://panel.example.com:8000",
        "username": "bot",
        "password": PASSWORD,
        "timeout_seconds": 5,
        "inbounds": {"vless": [], "trojan": ["Trojan Websocket TLS"]},
        "data_limit_reset_strategy": "month",
    }
    [backend] = plugin.vpnbot_vpn_backends(settings_with(table))
    assert isinstance(backend, MarzbanBackend)
    assert backend.name == "marzban"


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"base_url": "https://p", "username": "bot"}, "plugins.settings.marzban.password"),
        ({"base_url": "ftp://p", "username": "u", "password": "p"}, ".base_url"),
        ({"base_url": "https://p", "username": "u", "password": "p", "pasword": "x"}, "pasword"),
        ({"base_url": "https://p", "username": "u", "password": "p", "inbounds": {}}, "inbounds"),
        (
            {"base_url": "https://p", "username": "u", "password": "p", "inbounds": {"x": []}},
            "inbounds",
        ),
        (
            {"base_url": "https://p", "username": "u", "password": "p", "timeout_seconds": 0},
            "timeout_seconds",
        ),
    ],
)
def test_hook_rejects_a_bad_table(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plugin.vpnbot_vpn_backends(settings_with(table))
    assert path in str(caught.value)
    assert "plugins.settings.marzban" in str(caught.value)


def test_config_errors_do_not_echo_the_password() -> None:
    table = {"base_url": "https://p", "username": "u", "password": PASSWORD, "inbounds": 3}
    with pytest.raises(ConfigError) as caught:
        plugin.vpnbot_vpn_backends(settings_with(table))
    assert PASSWORD not in str(caught.value)


def test_the_plugin_loader_offers_the_backend_and_stops_on_a_bad_table() -> None:
    entry_points = [EntryPoint("marzban", "plugins.marzban", ENTRY_POINT_GROUP)]
    loaded = load_plugins(
        settings_with({"base_url": "https://p", "username": "u", "password": PASSWORD}),
        entry_points=entry_points,
    )
    assert [backend.name for backend in loaded.vpn_backends()] == ["marzban"]
    assert loaded.problems == []
    with pytest.raises(ConfigError):
        load_plugins(
            settings_with({"base_url": "https://p", "username": "u"}), entry_points=entry_points
        )


# -- plan limits -------------------------------------------------------------------------


async def test_the_traffic_limit_is_set_on_create_and_on_extend_and_usage_is_read(
    backend: MarzbanBackend, fake: FakeMarzban
) -> None:
    first = spec("u_lim_1", traffic_limit_bytes=5 * GIB, device_limit=2)
    created = await backend.ensure_account(first)
    user = fake.users["u_lim_1"]
    assert user["data_limit"] == 5 * GIB
    assert user["data_limit_reset_strategy"] == "no_reset"
    assert (created.used_bytes, created.traffic_limit_bytes) == (0, 5 * GIB)
    fake.use_traffic("u_lim_1", 3 * GIB)
    extended = await backend.ensure_account(
        replace(
            first, expires_at=first.expires_at + timedelta(days=30), traffic_limit_bytes=8 * GIB
        )
    )
    assert fake.users["u_lim_1"]["data_limit"] == 8 * GIB
    assert (extended.used_bytes, extended.traffic_limit_bytes) == (3 * GIB, 8 * GIB)
    unlimited = await backend.ensure_account(replace(first, traffic_limit_bytes=None))
    assert fake.users["u_lim_1"]["data_limit"] in (0, None)
    assert unlimited.traffic_limit_bytes is None


def test_marzban_declares_traffic_but_no_device_limit() -> None:
    from runtime.plugin_api import capabilities_of

    declared = capabilities_of(MarzbanBackend)
    assert declared.traffic_limit and declared.usage
    assert not declared.device_limit and not declared.devices
