"""The Outline backend against the fake Outline management API, over real TLS on 127.0.0.1."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from plugins.outline import OutlineBackend, vpnbot_vpn_backends
from plugins.outline.pinning import parse_fingerprint
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError, FailureType, classify
from runtime.logs import configure_logging, reset_logging
from runtime.plugin_api.vpn import AccountSpec
from runtime.testing.contract import BackendUnderTest, VpnBackendContract
from runtime.testing.fakes.outline import Certificate, FakeOutline, self_signed_certificate

SECRET = "Xk3vQ9SecretPath7Jd2"

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command for test certificates"
)


@dataclass(frozen=True)
class Certs:
    server: Certificate
    other: Certificate


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("outline-certs")
    return Certs(
        self_signed_certificate(folder, stem="server"),
        self_signed_certificate(folder, stem="other"),
    )


PERIOD_START = datetime(2030, 1, 1, tzinfo=UTC)


def spec(
    name: str, *, limit: int | None = None, days: int = 30, period_start: datetime = PERIOD_START
) -> AccountSpec:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    return AccountSpec(
        name=name,
        expires_at=expires,
        telegram_id=4242,
        period_start=period_start,
        traffic_limit_bytes=limit,
    )


def key_id(name: str, period_start: datetime = PERIOD_START) -> str:
    return f"{name}-{int(period_start.timestamp()) * 1_000_000}"


PATIENT = 30.0
"""The timeout of the calls that must succeed: a TLS handshake on a busy machine is slow."""
IMPATIENT = 0.3
"""The timeout of the call that must time out (the fake answers it after 2 s)."""


class Backends:
    """Builds backends on a fake and closes them all at the end."""

    def __init__(self) -> None:
        self.made: list[OutlineBackend] = []

    def __call__(self, api_url: str, cert_sha256: str, **options: Any) -> OutlineBackend:
        options.setdefault("timeout", PATIENT)
        backend = OutlineBackend(api_url, cert_sha256, **options)
        self.made.append(backend)
        return backend

    async def aclose(self) -> None:
        for backend in self.made:
            await backend.aclose()


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    made = Backends()
    yield made
    await made.aclose()


@pytest.fixture
async def fake(certs: Certs) -> AsyncIterator[FakeOutline]:
    peer = FakeOutline(certfile=certs.server.certfile, keyfile=certs.server.keyfile, secret=SECRET)
    async with peer.running():
        yield peer


@pytest.fixture
def backend(fake: FakeOutline, backends: Backends) -> OutlineBackend:
    return backends(fake.api_url, fake.cert_sha256)


def secrets_of(fake: FakeOutline) -> list[str]:
    return [fake.secret, fake.api_url]


class TestOutlineContract(VpnBackendContract):
    @pytest.fixture
    async def subject(self, certs: Certs, backends: Backends) -> AsyncIterator[BackendUnderTest]:
        fake = FakeOutline(
            certfile=certs.server.certfile, keyfile=certs.server.keyfile, secret=SECRET
        )
        async with fake.running():

            def fresh() -> OutlineBackend:
                return backends(fake.api_url, fake.cert_sha256)

            yield BackendUnderTest(
                fresh(),
                fake,
                secrets=secrets_of(fake),
                make_fresh=fresh,
                stores_expiry=False,
                use_traffic=fake.use_traffic,
            )


# -- lifecycle -----------------------------------------------------------------------------


async def test_the_lifecycle_of_an_access_key(fake: FakeOutline, backend: OutlineBackend) -> None:
    kid = key_id("u1_s1")
    created = await backend.ensure_account(spec("u1_s1", limit=5_000))
    assert created.reference == kid
    assert created.access_url.startswith("ss://")
    assert created.expires_at is None and created.enabled
    assert fake.keys[kid]["name"] == "u1_s1"
    assert fake.keys[kid]["dataLimit"] == {"bytes": 5_000}
    assert fake.keys[kid]["password"] == backend.password_for("u1_s1")
    assert fake.calls("PUT", f"/{SECRET}/access-keys/{kid}")[0].json()["limit"] == {"bytes": 5_000}

    await backend.ensure_account(spec("u1_s1", limit=9_000))
    assert fake.keys[kid]["dataLimit"] == {"bytes": 9_000}

    unlimited = await backend.ensure_account(spec("u1_s1"))
    assert unlimited.enabled
    assert "dataLimit" not in fake.keys[kid]

    await backend.disable("u1_s1")
    assert fake.keys[kid]["dataLimit"] == {"bytes": 0}
    assert fake.blocked(kid)
    disabled = await backend.get_account("u1_s1")
    assert disabled is not None and not disabled.enabled and not disabled.limited
    assert disabled.access_url == created.access_url

    enabled = await backend.ensure_account(spec("u1_s1", limit=5_000))
    assert enabled.enabled and enabled.reference == created.reference
    assert fake.keys[kid]["dataLimit"] == {"bytes": 5_000}
    assert not fake.blocked(kid)

    await backend.delete("u1_s1")
    assert kid not in fake.keys
    assert await backend.get_account("u1_s1") is None
    await backend.delete("u1_s1")
    await backend.disable("u1_s1")
    assert list(fake.keys) == []


async def test_a_new_period_gets_a_new_key_with_the_same_access_url(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    first = await backend.ensure_account(spec("u1_s2", limit=5_000))
    fake.use_traffic("u1_s2", 5_000)
    spent = await backend.get_account("u1_s2")
    assert spent is not None and spent.limited and not spent.enabled

    fake.requests.clear()
    later = PERIOD_START + timedelta(days=30)
    renewed = await backend.ensure_account(spec("u1_s2", limit=5_000, period_start=later))
    assert renewed.enabled and not renewed.limited
    assert renewed.access_url == first.access_url  # the user's client keeps working
    assert renewed.reference == key_id("u1_s2", later) != first.reference
    assert set(fake.keys) == {key_id("u1_s2", later)}
    assert not fake.blocked(key_id("u1_s2", later))
    assert [(r.method, r.path.removeprefix(f"/{SECRET}")) for r in fake.requests] == [
        ("GET", f"/access-keys/{key_id('u1_s2', later)}"),
        ("GET", "/access-keys"),
        ("DELETE", f"/access-keys/{key_id('u1_s2')}"),
        ("PUT", f"/access-keys/{key_id('u1_s2', later)}"),
        ("GET", "/metrics/transfer"),
    ]

    fake.use_traffic("u1_s2", 10)
    again = await backend.ensure_account(spec("u1_s2", limit=5_000, period_start=later))
    assert again.reference == renewed.reference  # a retry adopts: no second new key
    assert fake.transferred[renewed.reference] == 10


async def test_a_key_from_before_periods_passes_its_credentials_on(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    legacy = fake.add_key("u1_s3", name="u1_s3", port=40000, method="aes-128-gcm")
    account = await backend.ensure_account(spec("u1_s3"))
    assert account.access_url == legacy["accessUrl"]
    assert set(fake.keys) == {key_id("u1_s3")}
    assert fake.keys[key_id("u1_s3")]["password"] == legacy["password"]


async def test_a_crash_between_deleting_and_making_the_key_loses_nothing(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    first = await backend.ensure_account(spec("u1_s4"))
    later = PERIOD_START + timedelta(days=30)
    fake.keys.pop(key_id("u1_s4"))  # deleted, then the process died before the new key
    account = await backend.ensure_account(spec("u1_s4", period_start=later))
    assert account.access_url == first.access_url  # the password is derived again


async def test_an_enabled_key_obeys_the_server_default_limit(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    await backend.ensure_account(spec("u2_s1"))
    fake.default_limit = {"bytes": 100}
    fake.transfer(key_id("u2_s1"), 150)
    assert fake.blocked(key_id("u2_s1"))  # Outline's rule: no own limit -> the server default
    account = await backend.get_account("u2_s1")
    assert account is not None and account.limited and not account.enabled


async def test_the_configured_cipher_is_asked_for(fake: FakeOutline, backends: Backends) -> None:
    backend = backends(fake.api_url, fake.cert_sha256, method="aes-256-gcm")
    await backend.ensure_account(spec("u3_s1"))
    assert fake.keys[key_id("u3_s1")]["method"] == "aes-256-gcm"


async def test_an_existing_key_of_the_period_is_adopted(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    kid = key_id("u4_s1")
    existing = fake.add_key(kid, name="renamed by hand", limit={"bytes": 0})
    account = await backend.ensure_account(spec("u4_s1", limit=7_000))
    assert [r.method for r in fake.requests] == ["GET", "PUT", "PUT", "GET"]
    assert fake.requests[0].path == f"/{SECRET}/access-keys/{kid}"
    assert account.reference == existing["id"] == kid
    assert account.access_url == existing["accessUrl"]
    assert account.enabled
    assert list(fake.keys) == [kid]
    assert fake.keys[kid]["name"] == "u4_s1"
    assert fake.keys[kid]["dataLimit"] == {"bytes": 7_000}


async def test_an_adopted_key_in_the_right_state_needs_no_change(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    await backend.ensure_account(spec("u5_s1", limit=1_000))
    fake.requests.clear()
    await backend.ensure_account(spec("u5_s1", limit=1_000))
    assert [r.method for r in fake.requests] == ["GET", "GET"]  # the key, its usage


async def test_keys_made_elsewhere_keep_their_server_ids(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    manual = fake.add_key(name="Admin")
    assert manual["id"] == "0"
    account = await backend.ensure_account(spec("u6_s1"))
    assert account.reference == key_id("u6_s1")
    assert set(fake.keys) == {"0", key_id("u6_s1")}
    await backend.delete("u6_s1")
    assert set(fake.keys) == {"0"}


async def test_a_password_taken_by_another_key_is_a_permanent_failure(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    fake.add_key(name="Admin", password=backend.password_for("u6_s2"))
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec("u6_s2"))
    assert classify(caught.value).transient is False
    assert backend.password_for("u6_s2") not in str(caught.value)


# -- the certificate pin -------------------------------------------------------------------


async def test_a_server_with_another_certificate_gets_nothing(
    certs: Certs, backends: Backends
) -> None:
    impostor = FakeOutline(
        certfile=certs.other.certfile, keyfile=certs.other.keyfile, secret=SECRET
    )
    async with impostor.running():
        backend = backends(impostor.api_url, certs.server.sha256)
        for call in (
            lambda: backend.ensure_account(spec("u7_s1")),
            lambda: backend.health(),
            lambda: backend.delete("u7_s1"),
        ):
            with pytest.raises(DependencyError) as caught:
                await call()
            assert classify(caught.value).transient is False
            assert "does not match cert_sha256" in str(caught.value)
            assert SECRET not in str(caught.value)
        assert impostor.requests == []


class SwitchingProxy:
    """A TCP relay on 127.0.0.1 whose upstream port can be switched; switching drops the
    open connections, so the next request opens a new one to the new upstream."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._relays: list[tuple[trio.CancelScope, trio.Event]] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def switch(self, upstream: int) -> None:
        """Relay new connections to ``upstream``, once every open one is closed."""
        self.upstream = upstream
        for scope, closed in self._relays:
            scope.cancel()
            await closed.wait()

    async def _relay(self, client: trio.SocketStream) -> None:
        closed = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._relays.append((scope, closed))
                async with client:
                    server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
        finally:
            closed.set()

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_certificate_swapped_after_pinning_is_refused(
    certs: Certs, backends: Backends
) -> None:
    genuine = FakeOutline(
        certfile=certs.server.certfile, keyfile=certs.server.keyfile, secret=SECRET
    )
    impostor = FakeOutline(
        certfile=certs.other.certfile, keyfile=certs.other.keyfile, secret=SECRET
    )
    async with genuine.running() as genuine_url, impostor.running() as impostor_url:
        proxy = SwitchingProxy(port_of(genuine_url))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            backend = backends(f"https://127.0.0.1:{port}/{SECRET}", certs.server.sha256)
            await backend.health()
            assert len(genuine.requests) == 1

            await proxy.switch(port_of(impostor_url))
            with pytest.raises(DependencyError) as caught:
                await backend.health()
            assert classify(caught.value).transient is False
            assert "another certificate" in str(caught.value)
            assert SECRET not in str(caught.value)
            assert impostor.requests == []
            nursery.cancel_scope.cancel()


async def test_the_fingerprint_may_be_written_with_colons(
    fake: FakeOutline, backends: Backends
) -> None:
    digest = bytes.fromhex(fake.cert_sha256)
    with_colons = ":".join(f"{byte:02x}" for byte in digest)
    assert parse_fingerprint(with_colons) == digest
    await backends(fake.api_url, with_colons).health()


# -- failures ------------------------------------------------------------------------------


async def test_a_hanging_api_is_a_transient_timeout(fake: FakeOutline, backends: Backends) -> None:
    backend = backends(fake.api_url, fake.cert_sha256, timeout=0.3)
    fake.delay_next(3.0, times=5)
    with trio.fail_after(30):
        with pytest.raises(DependencyError) as caught:
            await backend.ensure_account(spec("u8_s1"))
    failure = classify(caught.value)
    assert failure.type is FailureType.DEPENDENCY and failure.transient
    assert "timed out" in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_a_server_that_never_completes_the_handshake_is_a_transient_timeout(
    backends: Backends, certs: Certs
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # accepts, never answers
    try:
        port = listeners[0].socket.getsockname()[1]
        backend = backends(f"https://127.0.0.1:{port}/{SECRET}", certs.server.sha256, timeout=0.3)
        with trio.fail_after(30):
            with pytest.raises(DependencyError) as caught:
                await backend.health()
        assert classify(caught.value).transient
        assert "timed out during the TLS handshake" in str(caught.value)
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_a_closed_port_is_transient(backends: Backends, certs: Certs) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    backend = backends(f"https://127.0.0.1:{port}/{SECRET}", certs.server.sha256)
    with pytest.raises(DependencyError) as caught:
        await backend.health()
    assert classify(caught.value).transient


async def test_rate_limits_carry_retry_after(fake: FakeOutline, backend: OutlineBackend) -> None:
    fake.rate_limit_next(12)
    with pytest.raises(DependencyError) as caught:
        await backend.get_account("u9_s1")
    assert caught.value.retry_after == 12
    assert classify(caught.value).transient


async def test_a_wrong_secret_path_is_never_read_as_a_missing_key(
    fake: FakeOutline, backends: Backends
) -> None:
    wrong = f"{fake.url}/NotTheSecret42"
    backend = backends(wrong, fake.cert_sha256)
    await backends(fake.api_url, fake.cert_sha256).ensure_account(spec("u10_s1"))
    for call in (
        lambda: backend.delete("u10_s1"),
        lambda: backend.disable("u10_s1"),
        lambda: backend.get_account("u10_s1"),
    ):
        with pytest.raises(DependencyError) as caught:
            await call()
        assert classify(caught.value).transient is False
        assert "ResourceNotFound" in str(caught.value)
        assert "NotTheSecret42" not in str(caught.value)
    assert key_id("u10_s1") in fake.keys


async def test_a_server_older_than_1_10_is_a_permanent_failure(
    fake: FakeOutline, backend: OutlineBackend
) -> None:
    fake.fail_next(405, body={"code": "MethodNotAllowed", "message": "PUT is not allowed"})
    with pytest.raises(DependencyError) as caught:
        await backend.ensure_account(spec("u11_s1"))
    assert classify(caught.value).transient is False


# -- secrets -------------------------------------------------------------------------------


async def failing_calls(
    fake: FakeOutline, backend: OutlineBackend, impatient: OutlineBackend
) -> list[str]:
    """Run every kind of failure; the messages of what was raised. ``impatient`` times out
    where ``backend`` would wait."""
    messages: list[str] = []

    async def expect_failure(call: Callable[[], Any]) -> None:
        with pytest.raises(DependencyError) as caught:
            await call()
        messages.append(str(caught.value))
        messages.append(repr(caught.value))

    await backend.ensure_account(spec("u12_s1"))
    echo = {"code": "Internal", "message": f"/{fake.secret}/access-keys failed"}
    for status in (500, 502, 503, 429, 400, 403, 404):
        fake.fail_next(status, body=echo, headers={"Retry-After": "1"})
        await expect_failure(lambda: backend.ensure_account(spec("u12_s1")))
    fake.fail_next(404, body=f"Cannot GET /{fake.secret}/server")
    await expect_failure(backend.health)
    fake.delay_next(2.0)
    await expect_failure(lambda: impatient.get_account("u12_s1"))
    return messages


async def test_the_secret_path_never_reaches_an_exception(
    fake: FakeOutline, backends: Backends
) -> None:
    backend = backends(fake.api_url, fake.cert_sha256, timeout=PATIENT)
    impatient = backends(fake.api_url, fake.cert_sha256, timeout=IMPATIENT)
    messages = await failing_calls(fake, backend, impatient)
    assert len(messages) == 18
    for message in messages:
        for secret in secrets_of(fake):
            assert secret not in message
    assert fake.secret not in repr(backend)


async def test_the_secret_path_never_reaches_the_plugins_own_log_events(
    fake: FakeOutline, backends: Backends
) -> None:
    backend = backends(fake.api_url, fake.cert_sha256, timeout=PATIENT)
    impatient = backends(fake.api_url, fake.cert_sha256, timeout=IMPATIENT)
    with capture_logs() as events:
        await failing_calls(fake, backend, impatient)
        await backend.disable("u12_s1")
        await backend.delete("u12_s1")
        await backend.delete("u12_s1")
    assert events
    assert fake.secret not in repr(events)


async def test_the_secret_path_never_reaches_a_log_line(
    fake: FakeOutline, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=stream)
    try:
        made = [
            vpnbot_vpn_backends(
                settings_with(
                    {
                        "api_url": fake.api_url,
                        "cert_sha256": fake.cert_sha256,
                        "timeout_seconds": timeout,
                    }
                )
            )[0]
            for timeout in (PATIENT, IMPATIENT)
        ]
        backend, impatient = made
        assert isinstance(backend, OutlineBackend) and isinstance(impatient, OutlineBackend)
        try:
            await failing_calls(fake, backend, impatient)
        finally:
            for each in made:
                await each.aclose()
    finally:
        reset_logging()
    assert "certificate pinned" in stream.getvalue()
    assert fake.secret not in stream.getvalue()
    assert fake.secret not in caplog.text


# -- the hook ------------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None) -> Settings:
    plugins: dict[str, Any] = {"settings": {} if table is None else {"outline": table}}
    return Settings.model_validate({"plugins": plugins})


GOOD_FINGERPRINT = "AB" * 32


def test_the_hook_offers_nothing_when_unconfigured() -> None:
    assert vpnbot_vpn_backends(settings_with(None)) == []


def test_the_hook_builds_a_backend() -> None:
    table = {
        "api_url": f"https://203.0.113.7:37518/{SECRET}/",
        "cert_sha256": ":".join(["ab"] * 32),
        "timeout_seconds": 5,
        "method": "aes-128-gcm",
    }
    (backend,) = vpnbot_vpn_backends(settings_with(table))
    assert isinstance(backend, OutlineBackend)
    assert backend.name == "outline"
    assert SECRET not in repr(backend)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"api_url": f"https://h:1/{SECRET}", "cert_sha256": "AB" * 31}, "cert_sha256"),
        ({"api_url": f"https://h:1/{SECRET}", "cert_sha256": "zz" * 32}, "cert_sha256"),
        ({"api_url": f"https://h:1/{SECRET}"}, "cert_sha256"),
        ({"api_url": f"http://h:1/{SECRET}", "cert_sha256": GOOD_FINGERPRINT}, "api_url"),
        ({"api_url": "https://h:1/", "cert_sha256": GOOD_FINGERPRINT}, "api_url"),
        ({"api_url": f"https://h:99999/{SECRET}", "cert_sha256": GOOD_FINGERPRINT}, "api_url"),
        ({"cert_sha256": GOOD_FINGERPRINT}, "api_url"),
        (
            {"api_url": f"https://h:1/{SECRET}", "cert_sha256": GOOD_FINGERPRINT, "method": "rc4"},
            "method",
        ),
        (
            {"api_url": f"https://h:1/{SECRET}", "cert_sha256": GOOD_FINGERPRINT, "timeout": 3},
            "timeout",
        ),
        (
            {
                "api_url": f"https://h:1/{SECRET}",
                "cert_sha256": GOOD_FINGERPRINT,
                "timeout_seconds": 0,
            },
            "timeout_seconds",
        ),
    ],
)
def test_a_bad_settings_table_is_a_config_error(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_vpn_backends(settings_with(table))
    assert [problem.path for problem in caught.value.problems] == [
        f"plugins.settings.outline.{key}"
    ]
    assert SECRET not in str(caught.value)


# -- plan limits -------------------------------------------------------------------------


async def test_the_data_limit_is_set_and_raised_and_usage_is_read(
    backend: OutlineBackend, fake: FakeOutline
) -> None:
    created = await backend.ensure_account(spec("lim_1", limit=5 * 2**30))
    assert fake.key_named("lim_1")["dataLimit"] == {"bytes": 5 * 2**30}
    assert (created.used_bytes, created.traffic_limit_bytes) == (0, 5 * 2**30)
    fake.use_traffic("lim_1", 2**30)
    raised = await backend.ensure_account(spec("lim_1", limit=6 * 2**30))
    assert fake.key_named("lim_1")["dataLimit"] == {"bytes": 6 * 2**30}
    assert (raised.used_bytes, raised.traffic_limit_bytes) == (2**30, 6 * 2**30)
