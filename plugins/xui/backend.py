"""The ``xui`` VPN backend: accounts are 3x-ui clients, detected API generation, one login.

Detection (``api = "auto"``), done on first use and cached:

1. ``GET panel/api/inbounds/get/<first inbound>``: every version serves it, so it proves
   the login (or token) and that the configured inbound exists; a 404 here means wrong
   credentials or a wrong base URL, not an old panel.
2. ``GET panel/api/clients/get/<probe>``: a JSON answer (even "not found") means the v3.1+
   clients API; a 404, now that the session is known good, means v2.x/v3.0.

A panel can be upgraded under a running bot: when a call gets a 404 that a fresh login
does not cure, the generation is detected again and the call repeated once on the new one.

Traffic per period: an update keeps the client's used traffic, so a new period
(``spec.period_start``) resets it with the panel's reset call. Which period was reset for
is kept as a ``PeriodMark`` in the client's ``comment``: opened (with the usage seen) in
the update that sets the spec's values, closed after the reset.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import trio

from runtime.failures import DependencyError
from runtime.logs import add_secrets, get_logger
from runtime.plugin_api.limits import BackendCapabilities
from runtime.plugin_api.vpn import Account, AccountSpec, PeriodMark, enter_period

from . import records
from .apis import CLIENTS, ApiKind, ClientsApi, InboundsApi, PanelApi, read_inbound
from .client import RouteNotFound, XuiClient
from .identity import Identity
from .records import Client, Traffic
from .settings import XuiSettings

_log = get_logger("xui")

T = TypeVar("T")

_FORCED: dict[str, ApiKind] = {"inbounds": "inbounds", "clients": "clients"}

PROBE_EMAIL = "vpnbot-api-probe"
"""Looked up to tell the API generations apart; no account is ever named like this."""


class XuiBackend:
    """A ``VpnBackend`` over one 3x-ui panel."""

    capabilities = BackendCapabilities(traffic_limit=True, device_limit=True, usage=True)
    """``totalGB`` per client; ``limitIp`` (enforced by the panel's IP limit job)."""

    def __init__(
        self,
        client: XuiClient,
        *,
        inbound_ids: Sequence[int],
        subscription_base_url: str,
        identity: Identity,
        flow: str = "",
        api: str = "auto",
        name: str = "xui",
    ) -> None:
        if not inbound_ids:
            raise ValueError("a 3x-ui backend needs at least one inbound id")
        if api not in ("auto", "inbounds", "clients"):
            raise ValueError(f"unknown 3x-ui API {api!r}")
        self.name = name
        self._client = client
        self._inbound_ids = list(inbound_ids)
        self._sub_base = (
            subscription_base_url
            if subscription_base_url.endswith("/")
            else subscription_base_url + "/"
        )
        self._identity = identity
        self._flow = flow
        self._forced: ApiKind | None = _FORCED.get(api)
        self._api: PanelApi | None = None
        self._detect_lock = trio.Lock()

    @classmethod
    def from_settings(
        cls,
        config: XuiSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "xui",
    ) -> XuiBackend:
        password = config.password.get_secret_value() if config.password else None
        token = config.api_token.get_secret_value() if config.api_token else None
        verify: Any = True
        if config.tls_ca_file:
            verify = ssl.create_default_context(cafile=config.tls_ca_file)
        client = XuiClient(
            config.base_url,
            username=config.username,
            password=password,
            api_token=token,
            timeout=config.timeout_seconds,
            transport=transport,
            verify=verify,
        )
        identity_secret = config.identity_key_material()
        add_secrets([s for s in (password, token, identity_secret) if s])
        return cls(
            client,
            inbound_ids=config.inbound_ids,
            subscription_base_url=config.subscription_base_url,
            identity=Identity(identity_secret),
            flow=config.flow,
            api=config.api,
            name=name,
        )

    def __repr__(self) -> str:
        return f"XuiBackend(name={self.name!r}, inbounds={self._inbound_ids!r})"

    @property
    def api_kind(self) -> ApiKind | None:
        """The generation in use (None until the first call)."""
        return self._api.kind if self._api is not None else None

    # -- VpnBackend ------------------------------------------------------------------

    async def ensure_account(self, spec: AccountSpec) -> Account:
        client, traffic = await self._run(lambda api: self._ensure(api, spec))
        return records.to_account(spec.name, client, self._sub_base, traffic)

    async def get_account(self, name: str) -> Account | None:
        async def read(api: PanelApi) -> tuple[Client | None, Traffic | None]:
            client = await api.find(name)
            return client, (await api.traffic(name) if client else None)

        client, traffic = await self._run(read)
        return records.to_account(name, client, self._sub_base, traffic) if client else None

    async def disable(self, name: str) -> None:
        await self._run(lambda api: api.disable(name))

    async def delete(self, name: str) -> None:
        await self._run(lambda api: api.delete(name))

    async def health(self) -> None:
        await self._current()
        for inbound_id in self._inbound_ids:
            await self._read_inbound(inbound_id)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _ensure(self, api: PanelApi, spec: AccountSpec) -> tuple[Client, Traffic | None]:
        existing = await api.find(spec.name)
        if existing is None:
            client = await api.ensure(spec, PeriodMark.closed(spec).render())
        else:
            comment = existing.get("comment")
            before = await api.traffic(spec.name)

            async def reset() -> None:
                await api.reset(spec.name)

            client = await enter_period(
                spec,
                comment if isinstance(comment, str) else None,
                before.used if before else 0,
                write=lambda new_comment: api.ensure(spec, new_comment),
                reset=reset,
            )
        return client, await api.traffic(spec.name)

    # -- detection -------------------------------------------------------------------

    async def _run(self, operation: Callable[[PanelApi], Awaitable[T]]) -> T:
        api = await self._current()
        try:
            return await operation(api)
        except RouteNotFound as exc:
            if self._forced is not None:
                raise DependencyError(
                    f"xui: {exc.path} answered 404 although api = {self._forced!r} is "
                    "configured: is that the panel's version?",
                    transient=False,
                ) from None
            previous = api.kind
            api = await self._current(redetect_after=api)
            if api.kind == previous:
                raise DependencyError(
                    f"xui: {exc.path} answered 404 on a panel serving the {previous} API",
                    transient=False,
                ) from None
            _log.warning(
                "panel API changed", operation="detect", previous=previous, current=api.kind
            )
            return await operation(api)

    async def _current(self, *, redetect_after: PanelApi | None = None) -> PanelApi:
        async with self._detect_lock:
            if self._api is None or self._api is redetect_after:
                kind = self._forced or await self._detect()
                self._api = self._make(kind)
                _log.info("panel API", operation="detect", api=kind)
            return self._api

    def _make(self, kind: ApiKind) -> PanelApi:
        cls = InboundsApi if kind == "inbounds" else ClientsApi
        return cls(self._client, self._inbound_ids, self._identity, self._flow)

    async def _detect(self) -> ApiKind:
        await self._read_inbound(self._inbound_ids[0])
        try:
            await self._client.call("GET", f"{CLIENTS}get/{PROBE_EMAIL}", relogin=False)
        except RouteNotFound:
            return "inbounds"
        return "clients"

    async def _read_inbound(self, inbound_id: int) -> None:
        """Every version serves this route: a 404 is about the login, not the version."""
        try:
            await read_inbound(self._client, inbound_id)
        except RouteNotFound:
            how = (
                "check username and password"
                if self._client.uses_session
                else "check api_token (API tokens need 3x-ui v3.0 or later)"
            )
            raise DependencyError(
                "xui: the panel's API answers 404: base_url must include the panel's web "
                f"base path; {how}",
                transient=False,
            ) from None
