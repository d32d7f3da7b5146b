"""The 3x-ui backend against the fake panel: both API generations, both ways to log in."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from typing import Any

import httpx
import pytest
import structlog

from plugins.xui import XuiBackend, XuiSettings, vpnbot_vpn_backends
from plugins.xui.identity import Identity
from plugins.xui.records import expiry_from_ms, expiry_ms
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError
from runtime.plugin_api import ENTRY_POINT_GROUP, VpnBackend, load_plugins
from runtime.plugin_api.vpn import AccountSpec
from runtime.testing.contract import BackendUnderTest, VpnBackendContract
from runtime.testing.fakes.xui import FakeXui
from runtime.testing.links import fetch_configs

PASSWORD = "pw-S3cret-Xui-Passw0rd"
TOKEN = "tok-S3cret-Xui-Api-T0ken"
BASE_PATH = "/s3cret-b4se/"
SECRETS = [PASSWORD, TOKEN, "s3cret-b4se"]
SUB = "https://sub.example.com:2096/sub/"
API = BASE_PATH + "panel/api/"


def settings_table(url: str, *, auth: str = "cookie", **changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "base_url": url + BASE_PATH,
        "inbound_ids": [1],
        "subscription_base_url": SUB,
        "timeout_seconds": 5,
    }
    if auth == "cookie":
        table.update(username="admin", password=PASSWORD)
    else:
        table["api_token"] = TOKEN
    table.update(changes)
    return table


def make_backend(url: str, *, auth: str = "cookie", **changes: Any) -> XuiBackend:
    return XuiBackend.from_settings(
        XuiSettings.model_validate(settings_table(url, auth=auth, **changes))
    )


def make_fake(api: str = "inbounds", auth: str = "cookie", **kwargs: Any) -> FakeXui:
    return FakeXui(
        api=api,  # type: ignore[arg-type]
        auth=auth,  # type: ignore[arg-type]
        password=PASSWORD,
        api_token=TOKEN,
        base_path=BASE_PATH,
        **kwargs,
    )


def spec(name: str, *, days: int = 30, **changes: Any) -> AccountSpec:
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, Any] = {
        "name": name,
        "expires_at": now + timedelta(days=days),
        "telegram_id": 777001,
        "period_start": now - timedelta(days=1),
    }
    values.update(changes)
    return AccountSpec(**values)


@pytest.fixture
async def panels() -> AsyncIterator[Callable[[XuiBackend], XuiBackend]]:
    """Closes every backend a test makes."""
    made: list[XuiBackend] = []

    def track(backend: XuiBackend) -> XuiBackend:
        made.append(backend)
        return backend

    yield track
    for backend in made:
        await backend.aclose()


# -- the contract, for both generations and both ways to log in --------------------------


class TestXuiContract(VpnBackendContract):
    @pytest.fixture(
        params=[
            ("inbounds", "cookie"),
            ("clients", "cookie"),
            ("inbounds", "token"),
            ("clients", "token"),
        ],
        ids=lambda p: f"{p[0]}-{p[1]}",
    )
    async def subject(
        self, request: pytest.FixtureRequest, panels: Callable[[XuiBackend], XuiBackend]
    ) -> AsyncIterator[BackendUnderTest]:
        api, auth = request.param
        fake = make_fake(api, auth)
        async with fake.running() as url:

            def fresh() -> XuiBackend:
                return panels(make_backend(url, auth=auth, subscription_base_url=url + "/sub/"))

            yield BackendUnderTest(
                fresh(), fake, secrets=SECRETS, make_fresh=fresh, use_traffic=fake.use_traffic
            )


# -- lifecycle -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["inbounds", "clients"])
async def test_lifecycle_create_extend_disable_delete(
    api: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api)
    async with fake.running() as url:
        backend = panels(make_backend(url, flow="xtls-rprx-vision"))
        first = spec("u_life", traffic_limit_bytes=5 * 2**30, device_limit=2)
        created = await backend.ensure_account(first)

        stored = fake.client("u_life")
        assert stored is not None
        identity = Identity(PASSWORD)
        assert stored["id"] == identity.client_uuid("u_life")
        assert stored["subId"] == identity.sub_id("u_life")
        assert stored["expiryTime"] == int(first.expires_at.timestamp() * 1000)
        assert stored["totalGB"] == 5 * 2**30  # bytes, despite the name
        assert stored["limitIp"] == 2
        assert stored["tgId"] == 777001
        assert stored["enable"] is True
        assert stored["flow"] == "xtls-rprx-vision"
        assert created.access_url == SUB + stored["subId"]
        assert created.reference == "u_life"
        assert created.expires_at == first.expires_at

        later = spec("u_life", days=90)
        extended = await backend.ensure_account(later)
        stored = fake.client("u_life")
        assert stored is not None
        assert stored["expiryTime"] == int(later.expires_at.timestamp() * 1000)
        assert stored["totalGB"] == 0 and stored["limitIp"] == 0  # absolute: now unlimited
        assert stored["id"] == identity.client_uuid("u_life")
        assert extended.expires_at == later.expires_at
        assert extended.access_url == created.access_url

        await backend.disable("u_life")
        stored = fake.client("u_life")
        assert stored is not None and stored["enable"] is False
        assert stored["expiryTime"] == int(later.expires_at.timestamp() * 1000)
        account = await backend.get_account("u_life")
        assert account is not None and not account.enabled

        await backend.delete("u_life")
        assert fake.find("u_life") == []
        assert await backend.get_account("u_life") is None
        assert len(fake.find("seed-1")) == 1  # the operator's own client is untouched


async def test_identity_is_keyed_by_a_secret() -> None:
    a, b = Identity("one secret"), Identity("another secret")
    assert a.client_uuid("tg_1_1") == Identity("one secret").client_uuid("tg_1_1")
    assert a.client_uuid("tg_1_1") != b.client_uuid("tg_1_1")
    assert a.client_uuid("tg_1_1") != a.client_uuid("tg_1_2")
    assert a.sub_id("tg_1_1") != b.sub_id("tg_1_1")
    assert len(a.sub_id("tg_1_1")) == 16 and a.sub_id("tg_1_1").isalnum()


def test_expiry_is_milliseconds_and_never_negative() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert expiry_ms(moment) == 1_893_553_445_000
    assert expiry_from_ms(1_893_553_445_000) == moment
    assert expiry_ms(datetime(1960, 1, 1, tzinfo=UTC)) == 1
    assert expiry_from_ms(0) is None  # never expires
    assert expiry_from_ms(-86_400_000) is None  # a duration from first use


async def test_a_later_expiry_is_sent_as_absolute_milliseconds(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_ms", days=10))
        later = spec("u_ms", days=40)
        await backend.ensure_account(later)
        [update] = fake.calls("POST", API + "inbounds/updateClient/")
        body = update.json()
        assert body["id"] == 1
        assert isinstance(body["settings"], str)  # a JSON text inside the JSON
        [client] = json.loads(body["settings"])["clients"]
        assert client["expiryTime"] == int(later.expires_at.timestamp() * 1000)


# -- traffic per period ------------------------------------------------------------------


def renewal_of(first: AccountSpec) -> AccountSpec:
    return replace(
        first,
        expires_at=first.expires_at + timedelta(days=30),
        period_start=first.period_start + timedelta(days=30),
    )


@pytest.mark.parametrize(
    ("api", "reset_route"),
    [
        ("inbounds", "inbounds/1/resetClientTraffic/u_used"),
        ("clients", "clients/resetTraffic/u_used"),
    ],
)
async def test_a_renewal_after_used_up_traffic_resets_usage_once(
    api: str, reset_route: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        first = spec("u_used", traffic_limit_bytes=2**30)
        await backend.ensure_account(first)
        fake.use_traffic("u_used", 2**30)
        spent = await backend.get_account("u_used")
        assert spent is not None and spent.limited and not spent.enabled
        assert fake.traffics["u_used"]["enable"] is False  # the panel's job ran

        renewed = renewal_of(first)
        account = await backend.ensure_account(renewed)
        assert account.enabled and not account.limited
        row = fake.traffics["u_used"]
        assert (row["up"] + row["down"], row["enable"], row["allTime"]) == (0, True, 2**30)
        stored = fake.client("u_used")
        assert stored is not None and stored["comment"] == f"vpnbot-period:{renewed.period}"
        assert len(fake.calls("POST", API + reset_route)) == 1

        fake.use_traffic("u_used", 100)
        again = await backend.ensure_account(renewed)  # a retry of the same period
        assert again.enabled and fake.traffics["u_used"]["down"] == 100
        assert len(fake.calls("POST", API + reset_route)) == 1


async def test_a_crash_after_the_reset_does_not_reset_again(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        first = spec("u_crash", traffic_limit_bytes=2**30)
        await backend.ensure_account(first)
        renewed = renewal_of(first)
        stored = fake.client("u_crash")
        assert stored is not None
        # the mark was opened at 900 bytes, the reset ran, the process died; 10 since
        fake.remove_client(1, "u_crash")
        fake.put_client(1, {**stored, "comment": f"vpnbot-period:{renewed.period}/open:900"})
        fake.use_traffic("u_crash", 10)
        account = await backend.ensure_account(renewed)
        assert account.enabled and fake.traffics["u_crash"]["down"] == 10
        assert not fake.calls("POST", API + "inbounds/1/resetClientTraffic/u_crash")
        stored = fake.client("u_crash")
        assert stored is not None and stored["comment"] == f"vpnbot-period:{renewed.period}"


async def test_the_operators_comment_is_kept_beside_the_mark(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("clients")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_note"))
        stored = fake.client("u_note")
        assert stored is not None
        fake.remove_client(1, "u_note")
        fake.put_client(1, {**stored, "comment": "paid in cash"})
        renewed = renewal_of(spec("u_note"))
        await backend.ensure_account(renewed)
        stored = fake.client("u_note")
        assert stored is not None
        assert stored["comment"] == f"paid in cash\nvpnbot-period:{renewed.period}"


@pytest.mark.parametrize("api", ["inbounds", "clients"])
async def test_the_subscription_server_serves_the_clients_links(
    api: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api, inbounds={1: "vless", 2: "trojan"}, shared_emails=True)  # v3.0+
    async with fake.running() as url:
        backend = panels(make_backend(url, inbound_ids=[1, 2], subscription_base_url=url + "/sub/"))
        account = await backend.ensure_account(spec("u_sub"))
        configs = await fetch_configs(account.access_url)
        identity = Identity(PASSWORD)
        assert sorted(c.split("://")[0] for c in configs) == ["trojan", "vless"]
        assert any(c.startswith(f"vless://{identity.client_uuid('u_sub')}@") for c in configs)
        async with httpx.AsyncClient() as client:
            unknown = await client.get(url + "/sub/nosuchsubid")
        assert (unknown.status_code, unknown.text) == (400, "Error!")


# -- adoption --------------------------------------------------------------------------


def _foreign_client(email: str) -> dict[str, Any]:
    return {
        "id": "11111111-2222-3333-4444-555555555555",
        "email": email,
        "subId": "madebyanother1",
        "limitIp": 9,
        "totalGB": 1,
        "expiryTime": 1000,
        "enable": False,
        "tgId": 1,
    }


@pytest.mark.parametrize(
    ("api", "route"), [("inbounds", "inbounds/addClient"), ("clients", "clients/add")]
)
async def test_duplicate_email_on_add_adopts_the_existing_client(
    api: str, route: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        # another process creates the client between our look-up and our add
        fake.before_next(route, lambda: fake.put_client(1, _foreign_client("u_race")))
        wanted = spec("u_race", device_limit=3)
        with structlog.testing.capture_logs() as logs:
            account = await backend.ensure_account(wanted)

        [(inbound_id, stored)] = fake.find("u_race")
        assert inbound_id == 1
        assert stored["id"] == "11111111-2222-3333-4444-555555555555"  # credential kept
        assert stored["subId"] == "madebyanother1"
        assert stored["enable"] is True and stored["limitIp"] == 3
        assert stored["expiryTime"] == int(wanted.expires_at.timestamp() * 1000)
        assert account.access_url == SUB + "madebyanother1"
        assert any(entry["event"] == "adopting existing client" for entry in logs)


async def test_a_client_on_another_inbound_is_adopted_not_duplicated(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds", inbounds={1: "vless", 2: "vless"})
    fake.put_client(2, _foreign_client("u_elsewhere"))
    async with fake.running() as url:
        backend = panels(make_backend(url))
        account = await backend.ensure_account(spec("u_elsewhere"))
        [(inbound_id, stored)] = fake.find("u_elsewhere")
        assert inbound_id == 2 and stored["enable"] is True
        assert account.enabled


async def test_an_email_made_with_capitals_in_the_panel_is_kept(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    fake.put_client(1, _foreign_client("U_Caps"))
    async with fake.running() as url:
        backend = panels(make_backend(url))
        account = await backend.ensure_account(spec("u_caps"))
        [(_, stored)] = fake.find("u_caps")
        assert stored["email"] == "U_Caps" and stored["enable"] is True
        assert account.enabled


# -- several inbounds -------------------------------------------------------------------


async def test_clients_api_attaches_every_inbound(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("clients", inbounds={1: "vless", 2: "trojan"})
    async with fake.running() as url:
        backend = panels(make_backend(url, inbound_ids=[1, 2]))
        await backend.ensure_account(spec("u_multi"))
        found = fake.find("u_multi")
        assert sorted(i for i, _ in found) == [1, 2]
        assert len({c["subId"] for _, c in found}) == 1
        # an inbound detached in the panel is attached again
        fake.remove_client(2, "u_multi")
        await backend.ensure_account(spec("u_multi"))
        assert sorted(i for i, _ in fake.find("u_multi")) == [1, 2]


async def test_v3_0_panel_shares_one_email_across_inbounds(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds", shared_emails=True, inbounds={1: "vless", 2: "trojan"})
    async with fake.running() as url:
        backend = panels(make_backend(url, inbound_ids=[1, 2]))
        await backend.ensure_account(spec("u_shared"))
        await backend.ensure_account(spec("u_shared", days=60))
        found = dict(fake.find("u_shared"))
        assert sorted(found) == [1, 2]
        assert found[1]["subId"] == found[2]["subId"]
        assert found[2]["password"] == Identity(PASSWORD).password("u_shared")
        await backend.delete("u_shared")
        assert fake.find("u_shared") == []


async def test_v2_panel_keeps_the_client_on_one_inbound(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds", inbounds={1: "vless", 2: "vless"})
    async with fake.running() as url:
        backend = panels(make_backend(url, inbound_ids=[1, 2]))
        with structlog.testing.capture_logs() as logs:
            account = await backend.ensure_account(spec("u_strict"))
        assert [i for i, _ in fake.find("u_strict")] == [1]
        assert account.enabled
        assert any(entry.get("outcome") == "degraded" for entry in logs)


async def test_the_last_client_of_an_old_inbound_is_disabled_instead_of_deleted(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    fake.add_inbound(1, "vless", seed_client=False)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_last"))
        with structlog.testing.capture_logs() as logs:
            await backend.delete("u_last")
        stored = fake.client("u_last")
        assert stored is not None and stored["enable"] is False
        assert any(entry.get("outcome") == "degraded" for entry in logs)


async def test_shadowsocks_2022_clients_get_a_key_of_the_right_size(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds", inbounds={})
    fake.add_inbound(1, "shadowsocks", method="2022-blake3-aes-128-gcm")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_ss"))
        stored = fake.client("u_ss")
        assert stored is not None and len(base64.b64decode(stored["password"])) == 16
        await backend.ensure_account(spec("u_ss", days=45))
        await backend.delete("u_ss")  # shadowsocks clients are addressed by email
        assert fake.find("u_ss") == []


# -- sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "csrf"), [("inbounds", False), ("inbounds", True), ("clients", True)]
)
async def test_an_expired_session_costs_one_login(
    api: str, csrf: bool, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api, csrf=csrf)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_sess"))
        assert fake.logins == 1
        fake.expire_sessions()  # the panel now answers 404 to the old cookie
        await backend.ensure_account(spec("u_sess", days=31))
        account = await backend.get_account("u_sess")
        assert account is not None
        assert fake.logins == 2
        assert len(fake.calls("POST", BASE_PATH + "login")) == 2


async def test_sessions_expire_by_time_too(panels: Callable[[XuiBackend], XuiBackend]) -> None:
    fake = make_fake("inbounds", session_ttl=3600)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_ttl"))
        for session in fake.sessions.values():  # an hour later
            assert session.expires_at is not None
            session.expires_at -= 3601
        assert await backend.get_account("u_ttl") is not None
        assert fake.logins == 2


async def test_a_wrong_password_is_a_permanent_failure(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url, password="not-the-" + PASSWORD))
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_nologin"))
        assert not caught.value.transient
        assert "log in" in str(caught.value)
        assert PASSWORD not in str(caught.value)


async def test_a_wrong_token_is_reported_as_such(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("clients", "token")
    async with fake.running() as url:
        backend = panels(make_backend(url, auth="token", api_token="not-the-" + TOKEN))
        with pytest.raises(DependencyError) as caught:
            await backend.health()
        assert not caught.value.transient
        assert "api_token" in str(caught.value)
        assert TOKEN not in str(caught.value)
        assert fake.calls("POST", BASE_PATH + "login") == []


async def test_an_old_panel_without_tokens_is_reported(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds", "cookie")  # v2.x: Bearer tokens are not a thing
    async with fake.running() as url:
        backend = panels(make_backend(url, auth="token"))
        with pytest.raises(DependencyError, match=r"v3\.0"):
            await backend.ensure_account(spec("u_oldtoken"))


# -- success: false ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "route"), [("inbounds", "inbounds/addClient"), ("clients", "clients/add")]
)
@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("Something went wrong (invalid flow for this inbound)", False),
        ("Something went wrong (database is locked)", True),
    ],
)
async def test_success_false_in_a_200_is_a_dependency_error(
    api: str,
    route: str,
    message: str,
    transient: bool,
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake(api)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.health()
        fake.fail_next(
            200, body={"success": False, "msg": message, "obj": None}, path_prefix=API + route
        )
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_refused"))
        assert caught.value.transient is transient
        assert message in str(caught.value)
        assert fake.find("u_refused") == []
        # and the next attempt goes through
        await backend.ensure_account(spec("u_refused"))
        assert len(fake.find("u_refused")) == 1


async def test_a_missing_inbound_is_a_permanent_failure(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("clients")
    async with fake.running() as url:
        backend = panels(make_backend(url, inbound_ids=[7]))
        with pytest.raises(DependencyError) as caught:
            await backend.health()
        assert not caught.value.transient
        assert "inbound 7" in str(caught.value)


async def test_an_answer_that_is_not_the_envelope_is_a_dependency_error(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.health()
        fake.fail_next(200, body="<html>maintenance</html>", path_prefix=API)
        with pytest.raises(DependencyError, match="not the panel's JSON"):
            await backend.get_account("u_html")


# -- transient failures -----------------------------------------------------------------


async def test_429_and_5xx_are_transient_and_the_next_call_works(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url))
        fake.fail_next(502, body="bad gateway", path_prefix=BASE_PATH + "login")
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_busy"))
        assert caught.value.transient

        fake.fail_next(
            429, body={"detail": "slow down"}, headers={"Retry-After": "30"}, path_prefix=API
        )
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_busy"))
        assert caught.value.transient and caught.value.retry_after == 30

        fake.fail_next(503, body="restarting", path_prefix=API + "inbounds/addClient")
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_busy"))
        assert caught.value.transient

        account = await backend.ensure_account(spec("u_busy"))
        assert account.enabled and len(fake.find("u_busy")) == 1


# -- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "auth"), [("inbounds", "cookie"), ("clients", "token")])
async def test_detection_picks_the_api_once(
    api: str, auth: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api, auth)
    async with fake.running() as url:
        backend = panels(make_backend(url, auth=auth))
        assert backend.api_kind is None
        await backend.ensure_account(spec("u_detect"))
        await backend.get_account("u_detect")
        await backend.disable("u_detect")
        assert backend.api_kind == api
        assert len(fake.calls("GET", API + "clients/get/vpnbot-api-probe")) == 1
        if auth == "cookie":
            assert fake.logins == 1  # the probe's 404 did not cost a login


@pytest.mark.parametrize("auth", ["cookie", "token"])
async def test_a_panel_upgraded_between_calls_is_detected_again(
    auth: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake("inbounds", auth)
    async with fake.running() as url:
        backend = panels(make_backend(url, auth=auth))
        created = await backend.ensure_account(spec("u_upgrade"))
        assert backend.api_kind == "inbounds"

        fake.switch_api("clients", csrf=True)  # v2 -> v3.1: the client routes are gone
        with structlog.testing.capture_logs() as logs:
            later = spec("u_upgrade", days=75)
            extended = await backend.ensure_account(later)

        assert backend.api_kind == "clients"
        assert extended.reference == created.reference
        assert extended.access_url == created.access_url
        [(_, stored)] = fake.find("u_upgrade")
        assert stored["expiryTime"] == int(later.expires_at.timestamp() * 1000)
        assert stored["id"] == Identity(PASSWORD if auth == "cookie" else TOKEN).client_uuid(
            "u_upgrade"
        )
        assert any(entry["event"] == "panel API changed" for entry in logs)
        await backend.disable("u_upgrade")
        assert fake.client("u_upgrade") is not None
        assert fake.client("u_upgrade")["enable"] is False  # type: ignore[index]


async def test_a_forced_api_the_panel_lacks_is_a_permanent_failure(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("inbounds")
    async with fake.running() as url:
        backend = panels(make_backend(url, api="clients"))
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u_forced"))
        assert not caught.value.transient
        assert "api = 'clients'" in str(caught.value)


async def test_the_clients_api_never_rotates_credentials_on_update(
    panels: Callable[[XuiBackend], XuiBackend],
) -> None:
    fake = make_fake("clients", inbounds={1: "trojan"})
    async with fake.running() as url:
        backend = panels(make_backend(url))
        await backend.ensure_account(spec("u_keep"))
        before = fake.client("u_keep")
        await backend.ensure_account(spec("u_keep", days=50))
        await backend.disable("u_keep")
        after = fake.client("u_keep")
        assert before is not None and after is not None
        assert after["password"] == before["password"] and after["id"] == before["id"]


# -- secrets -----------------------------------------------------------------------------


async def test_no_secret_in_errors_or_logs(panels: Callable[[XuiBackend], XuiBackend]) -> None:
    errors: list[str] = []
    with structlog.testing.capture_logs() as logs:
        fake = make_fake("inbounds")
        async with fake.running() as url:
            backend = panels(make_backend(url))
            await backend.ensure_account(spec("u_secret"))
            fake.expire_sessions()
            await backend.get_account("u_secret")
            fake.fail_next(500, body=f"panic: {PASSWORD} at {BASE_PATH}", path_prefix=API)
            with pytest.raises(DependencyError) as caught:
                await backend.disable("u_secret")
            errors.append(str(caught.value))
            fake.fail_next(
                200,
                body={"success": False, "msg": f"bad {PASSWORD} at {BASE_PATH}", "obj": None},
                path_prefix=API + "inbounds/updateClient",
            )
            with pytest.raises(DependencyError) as caught:
                await backend.disable("u_secret")
            errors.append(str(caught.value))
            wrong = panels(make_backend(url, password=PASSWORD + "-wrong"))
            with pytest.raises(DependencyError) as caught:
                await wrong.health()
            errors.append(str(caught.value))
            assert "HTTP 500" in errors[0] and "***" in errors[0]

        fake = make_fake("clients", "token")
        async with fake.running() as url:
            backend = panels(make_backend(url, auth="token", api_token=TOKEN + "x"))
            with pytest.raises(DependencyError) as caught:
                await backend.health()
            errors.append(str(caught.value))
            errors.append(repr(backend))

    text = "\n".join(errors) + "\n" + repr(logs)
    for secret in SECRETS:
        assert secret not in text


# -- the hook ----------------------------------------------------------------------------


def test_the_hook_offers_nothing_when_unconfigured() -> None:
    assert vpnbot_vpn_backends(Settings()) == []


def test_the_hook_builds_one_backend() -> None:
    settings = Settings.model_validate(
        {"plugins": {"settings": {"xui": settings_table("https://panel.example.com:2053")}}}
    )
    [backend] = vpnbot_vpn_backends(settings)
    assert isinstance(backend, VpnBackend) and isinstance(backend, XuiBackend)
    assert backend.name == "xui"
    assert PASSWORD not in repr(backend)


def test_the_plugin_loads_like_any_other() -> None:
    settings = Settings.model_validate(
        {"plugins": {"settings": {"xui": settings_table("https://panel.example.com:2053")}}}
    )
    entry_point = EntryPoint(name="xui", value="plugins.xui", group=ENTRY_POINT_GROUP)
    loaded = load_plugins(settings, entry_points=[entry_point], environ={})
    assert loaded.problems == []
    assert [backend.name for backend in loaded.vpn_backends()] == ["xui"]


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"inbound_ids": []}, "plugins.settings.xui.inbound_ids"),
        ({"inbound_ids": [0]}, "plugins.settings.xui.inbound_ids"),
        ({"api_token": TOKEN}, "plugins.settings.xui"),
        ({"password": None}, "plugins.settings.xui"),
        ({"base_url": "panel.example.com"}, "plugins.settings.xui.base_url"),
        ({"api": "v4"}, "plugins.settings.xui.api"),
        ({"inbound": [1]}, "plugins.settings.xui.inbound"),
        ({"subscription_base_url": None}, "plugins.settings.xui.subscription_base_url"),
    ],
)
def test_the_hook_rejects_a_bad_table(changes: dict[str, Any], where: str) -> None:
    table = settings_table("https://panel.example.com:2053")
    for key, value in changes.items():
        if value is None:
            table.pop(key)
        else:
            table[key] = value
    settings = Settings.model_validate({"plugins": {"settings": {"xui": table}}})
    with pytest.raises(ConfigError) as caught:
        vpnbot_vpn_backends(settings)
    assert any(problem.path.startswith(where) for problem in caught.value.problems)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)


# -- plan limits -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["inbounds", "clients"])
async def test_limits_are_set_on_create_and_on_extend_and_usage_is_read(
    api: str, panels: Callable[[XuiBackend], XuiBackend]
) -> None:
    fake = make_fake(api)
    async with fake.running() as url:
        backend = panels(make_backend(url))
        first = spec("lim_1", traffic_limit_bytes=5 * 2**30, device_limit=2)
        created = await backend.ensure_account(first)
        client = fake.client("lim_1")
        assert client is not None
        assert (client["totalGB"], client["limitIp"]) == (5 * 2**30, 2)
        assert (created.used_bytes, created.traffic_limit_bytes) == (0, 5 * 2**30)
        fake.use_traffic("lim_1", 2**30)
        extended = await backend.ensure_account(
            replace(
                first,
                expires_at=first.expires_at + timedelta(days=30),
                traffic_limit_bytes=7 * 2**30,
                device_limit=3,
            )
        )
        client = fake.client("lim_1")
        assert client is not None
        assert (client["totalGB"], client["limitIp"]) == (7 * 2**30, 3)
        assert (extended.used_bytes, extended.traffic_limit_bytes) == (2**30, 7 * 2**30)
