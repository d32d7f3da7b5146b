"""The two generations of the panel's client API, behind one small interface.

- ``InboundsApi`` (v2.x and v3.0): clients live inside each inbound's ``settings`` JSON;
  ``POST panel/api/inbounds/addClient`` takes ``{id, settings: "<JSON text>"}``,
  ``updateClient/:clientId`` replaces the whole client, ``:id/delClient/:clientId``.
- ``ClientsApi`` (v3.1 and later): clients are first-class, by email, under
  ``panel/api/clients/``: ``add`` ``{client, inboundIds}``, ``update/:email``,
  ``del/:email``, ``get/:email``, ``:email/attach``.

Both read a client's traffic row (``inbounds/getClientTraffics/:email``,
``clients/traffic/:email``) and reset it (``inbounds/:id/resetClientTraffic/:email``,
``clients/resetTraffic/:email``).

On the inbounds API a look-up reads the client's traffic row (to find it even on an
inbound not configured here) and every configured inbound whole; on the clients API it is
one ``get``.

Every operation looks the client up before writing: a v3.0 panel accepts a second
``addClient`` with the same email and subscription id and keeps two copies, so "add and
adopt on Duplicate email" alone is not idempotent. A duplicate answer still happens when
another process created the client in between; it is adopted then.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

from runtime.failures import DependencyError
from runtime.logs import get_logger
from runtime.plugin_api.vpn import AccountSpec

from . import records
from .client import XuiClient, is_duplicate, is_not_found
from .identity import Identity
from .records import Client, Traffic

_log = get_logger("xui")

ApiKind = Literal["inbounds", "clients"]

INBOUNDS = "panel/api/inbounds/"
CLIENTS = "panel/api/clients/"


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


class PanelApi(Protocol):
    kind: ApiKind

    async def find(self, name: str) -> Client | None: ...

    async def ensure(self, spec: AccountSpec, comment: str | None) -> Client:
        """Create or adopt the client with the spec's values; ``comment`` replaces its
        comment unless None."""
        ...

    async def traffic(self, name: str) -> Traffic | None: ...

    async def reset(self, name: str) -> None: ...

    async def disable(self, name: str) -> None: ...

    async def delete(self, name: str) -> None: ...


async def read_inbound(client: XuiClient, inbound_id: int) -> dict[str, Any]:
    """``GET panel/api/inbounds/get/:id``: served by every version, so also the probe."""
    reply = await client.call("GET", f"{INBOUNDS}get/{inbound_id}")
    if not reply.success or not isinstance(reply.obj, dict):
        raise client.refused(reply, f"read inbound {inbound_id}")
    return reply.obj


@dataclass
class _Place:
    inbound_id: int
    inbound: dict[str, Any]
    client: Client | None

    @property
    def protocol(self) -> str:
        return str(self.inbound.get("protocol", ""))


class InboundsApi:
    kind: ApiKind = "inbounds"

    def __init__(
        self, client: XuiClient, inbound_ids: Sequence[int], identity: Identity, flow: str
    ) -> None:
        self._client = client
        self._inbound_ids = list(inbound_ids)
        self._identity = identity
        self._flow = flow

    async def _traffic_row(self, name: str) -> dict[str, Any] | None:
        reply = await self._client.call("GET", f"{INBOUNDS}getClientTraffics/{_segment(name)}")
        if not reply.success:
            if is_not_found(reply.msg):
                return None
            raise self._client.refused(reply, f"look up client {name}")
        return reply.obj if isinstance(reply.obj, dict) else None

    async def _traffic_inbound(self, name: str) -> int | None:
        """The inbound the panel's traffic table puts ``name`` in, wherever that is."""
        row = await self._traffic_row(name)
        inbound_id = row.get("inboundId") if row else None
        if isinstance(inbound_id, int) and not isinstance(inbound_id, bool):
            return inbound_id
        return None

    async def traffic(self, name: str) -> Traffic | None:
        return Traffic.from_row(await self._traffic_row(name))

    async def reset(self, name: str) -> None:
        inbound_id = await self._traffic_inbound(name)
        if inbound_id is None:
            raise DependencyError(f"xui: client {name} has no traffic row to reset", transient=True)
        reply = await self._client.call(
            "POST", f"{INBOUNDS}{inbound_id}/resetClientTraffic/{_segment(name)}"
        )
        if not reply.success:
            raise self._client.refused(reply, f"reset the traffic of client {name}")

    async def _places(self, name: str) -> list[_Place]:
        """Every configured inbound, and the one the client sits in if elsewhere."""
        ids = list(self._inbound_ids)
        elsewhere = await self._traffic_inbound(name)
        if elsewhere is not None and elsewhere not in ids:
            ids.append(elsewhere)
        places = []
        for inbound_id in ids:
            inbound = await read_inbound(self._client, inbound_id)
            places.append(_Place(inbound_id, inbound, records.find_client(inbound, name)))
        return places

    def _flow_for(self, place: _Place) -> str:
        return self._flow if place.protocol == "vless" else ""

    async def find(self, name: str) -> Client | None:
        for place in await self._places(name):
            if place.client is not None:
                return place.client
        return None

    async def ensure(self, spec: AccountSpec, comment: str | None) -> Client:
        places = await self._places(spec.name)
        existing = [p.client for p in places if p.client is not None]
        like = existing[0] if existing else None
        result: Client | None = None
        for place in places:
            if place.client is not None:
                wanted = records.apply_spec(
                    place.client,
                    spec,
                    sub_id=self._identity.sub_id(spec.name),
                    flow=self._flow_for(place),
                    comment=comment,
                )
                if records.differs(place.client, wanted):
                    await self._update(place, wanted)
                result = result or wanted
            elif place.inbound_id in self._inbound_ids:
                added = await self._add(place, spec, like, comment)
                if added is not None:
                    like = like or added
                    result = result or added
        if result is None:
            raise DependencyError(f"xui: client {spec.name} is on none of the inbounds")
        return result

    async def _add(
        self, place: _Place, spec: AccountSpec, like: Client | None, comment: str | None
    ) -> Client | None:
        wanted = records.new_client(
            spec,
            self._identity,
            protocol=place.protocol,
            flow=self._flow_for(place),
            inbound_settings=records.parse_settings(place.inbound.get("settings")),
            like=like,
            comment=comment,
        )
        body = {"id": place.inbound_id, "settings": json.dumps({"clients": [wanted]})}
        reply = await self._client.call("POST", f"{INBOUNDS}addClient", json=body)
        if reply.success:
            return wanted
        if not is_duplicate(reply.msg):
            raise self._client.refused(reply, f"add client {spec.name}")
        if like is not None:
            # Panels before v3.0 keep an email in one inbound only.
            _log.warning(
                "panel keeps this client in one inbound only",
                operation="ensure_account",
                account=spec.name,
                inbound_id=place.inbound_id,
                outcome="degraded",
            )
            return None
        # Someone (a retried job, another process) created it since the look-up: adopt it.
        _log.info("adopting existing client", operation="ensure_account", account=spec.name)
        for other in await self._places(spec.name):
            if other.client is not None:
                adopted = records.apply_spec(
                    other.client,
                    spec,
                    sub_id=self._identity.sub_id(spec.name),
                    flow=self._flow_for(other),
                    comment=comment,
                )
                if records.differs(other.client, adopted):
                    await self._update(other, adopted)
                return adopted
        raise self._client.refused(reply, f"add client {spec.name}")

    async def _update(self, place: _Place, wanted: Client) -> None:
        assert place.client is not None
        key = records.client_key(place.protocol, place.client)
        body = {"id": place.inbound_id, "settings": json.dumps({"clients": [wanted]})}
        reply = await self._client.call(
            "POST", f"{INBOUNDS}updateClient/{_segment(key)}", json=body
        )
        if not reply.success:
            raise self._client.refused(reply, f"update client {wanted.get('email')}")

    async def disable(self, name: str) -> None:
        for place in await self._places(name):
            if place.client is not None and place.client.get("enable") is not False:
                await self._update(place, records.disabled(place.client))

    async def delete(self, name: str) -> None:
        for place in await self._places(name):
            if place.client is None:
                continue
            key = records.client_key(place.protocol, place.client)
            path = (
                f"{INBOUNDS}{place.inbound_id}/delClient/{_segment(key)}"
                if key
                else f"{INBOUNDS}{place.inbound_id}/delClientByEmail/{_segment(name)}"
            )
            reply = await self._client.call("POST", path)
            if reply.success or is_not_found(reply.msg):
                continue
            if "no client remained" in reply.msg.lower():
                # Up to v3.0 an inbound cannot lose its last client: stop access instead.
                _log.warning(
                    "panel refuses to delete the last client of an inbound; disabled it",
                    operation="delete",
                    account=name,
                    inbound_id=place.inbound_id,
                    outcome="degraded",
                )
                if place.client.get("enable") is not False:
                    await self._update(place, records.disabled(place.client))
                continue
            raise self._client.refused(reply, f"delete client {name}")


class ClientsApi:
    kind: ApiKind = "clients"

    def __init__(
        self, client: XuiClient, inbound_ids: Sequence[int], identity: Identity, flow: str
    ) -> None:
        self._client = client
        self._inbound_ids = list(inbound_ids)
        self._identity = identity
        self._flow = flow

    async def _get(self, name: str) -> tuple[Client, list[int]] | None:
        reply = await self._client.call("GET", f"{CLIENTS}get/{_segment(name)}")
        if not reply.success:
            if is_not_found(reply.msg):
                return None
            raise self._client.refused(reply, f"look up client {name}")
        obj = reply.obj if isinstance(reply.obj, dict) else {}
        record = obj.get("client")
        if not isinstance(record, dict):
            raise DependencyError(f"xui: client {name} came back without its record")
        attached = obj.get("inboundIds")
        ids = [i for i in attached if isinstance(i, int)] if isinstance(attached, list) else []
        return records.from_record(record), ids

    async def find(self, name: str) -> Client | None:
        found = await self._get(name)
        return found[0] if found else None

    async def traffic(self, name: str) -> Traffic | None:
        reply = await self._client.call("GET", f"{CLIENTS}traffic/{_segment(name)}")
        if not reply.success:
            if is_not_found(reply.msg):
                return None
            raise self._client.refused(reply, f"read the traffic of client {name}")
        return Traffic.from_row(reply.obj)

    async def reset(self, name: str) -> None:
        reply = await self._client.call("POST", f"{CLIENTS}resetTraffic/{_segment(name)}")
        if not reply.success:
            raise self._client.refused(reply, f"reset the traffic of client {name}")

    async def ensure(self, spec: AccountSpec, comment: str | None) -> Client:
        found = await self._get(spec.name)
        if found is None:
            wanted = records.new_client(
                spec, self._identity, protocol=None, flow=self._flow, comment=comment
            )
            body = {"client": wanted, "inboundIds": self._inbound_ids}
            reply = await self._client.call("POST", f"{CLIENTS}add", json=body)
            if reply.success:
                return wanted
            if not is_duplicate(reply.msg):
                raise self._client.refused(reply, f"add client {spec.name}")
            _log.info("adopting existing client", operation="ensure_account", account=spec.name)
            found = await self._get(spec.name)
            if found is None:
                raise self._client.refused(reply, f"add client {spec.name}")
        current, attached = found
        missing = [i for i in self._inbound_ids if i not in attached]
        if missing:
            reply = await self._client.call(
                "POST", f"{CLIENTS}{_segment(spec.name)}/attach", json={"inboundIds": missing}
            )
            if not reply.success:
                raise self._client.refused(reply, f"attach client {spec.name}")
        wanted = records.apply_spec(
            current, spec, sub_id=self._identity.sub_id(spec.name), flow=self._flow, comment=comment
        )
        if records.differs(current, wanted):
            await self._update(spec.name, wanted)
        return wanted

    async def _update(self, name: str, wanted: Client) -> None:
        reply = await self._client.call("POST", f"{CLIENTS}update/{_segment(name)}", json=wanted)
        if not reply.success:
            failure = self._client.refused(reply, f"update client {name}")
            if is_not_found(reply.msg):
                failure.transient = True  # deleted in between: the next try creates it
            raise failure

    async def disable(self, name: str) -> None:
        found = await self._get(name)
        if found is not None and found[0].get("enable") is not False:
            await self._update(name, records.disabled(found[0]))

    async def delete(self, name: str) -> None:
        reply = await self._client.call("POST", f"{CLIENTS}del/{_segment(name)}")
        if not reply.success and not is_not_found(reply.msg):
            raise self._client.refused(reply, f"delete client {name}")
