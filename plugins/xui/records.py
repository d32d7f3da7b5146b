"""3x-ui client objects as plain dicts: reading them, building them, setting a spec on them.

The panel's client (its ``model.Client``) carries ``email`` (unique panel-wide: the
account name), the protocol credential (``id`` UUID for VLESS/VMess, ``password`` for
Trojan and Shadowsocks, ``auth`` for Hysteria), ``subId``, ``limitIp``, ``totalGB``
(bytes, despite the name), ``expiryTime`` (milliseconds since the epoch; 0 never; negative:
a duration starting at first use), ``enable``, ``tgId`` and ``comment`` (free text, where
the ``PeriodMark`` of the account's traffic period is kept). Fields this module does not
manage are passed through untouched, since an update replaces the whole client.

The client's traffic lives apart, in its ``client_traffics`` row (``Traffic``): what it
used since its last reset, and the panel's own ``enable``, which the panel turns off when
the client runs out of traffic or time, leaving the client's ``enable`` as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.plugin_api.vpn import Account, AccountSpec

from .identity import Identity

Client = dict[str, Any]

MANAGED = (
    "email",
    "limitIp",
    "totalGB",
    "expiryTime",
    "enable",
    "tgId",
    "subId",
    "flow",
    "comment",
)
"""What ``apply_spec`` may change; credentials are never changed once on the panel."""

_KEY_FIELD = {
    "trojan": "password",
    "shadowsocks": "email",
    "hysteria": "auth",
    "hysteria2": "auth",
}
_SHADOWSOCKS_KEY_BYTES = {
    "2022-blake3-aes-128-gcm": 16,
    "2022-blake3-aes-256-gcm": 32,
    "2022-blake3-chacha20-poly1305": 32,
}


def key_field(protocol: str) -> str:
    """The client field the panel's per-inbound routes use as ``clientId``."""
    return _KEY_FIELD.get(protocol, "id")


def client_key(protocol: str, client: Mapping[str, Any]) -> str:
    value = client.get(key_field(protocol))
    return value if isinstance(value, str) else ""


def parse_settings(value: Any) -> dict[str, Any]:
    """An inbound's ``settings``: a JSON string (up to v3.0) or an object (v3.1 and later)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def clients_of(inbound: Mapping[str, Any]) -> list[Client]:
    clients = parse_settings(inbound.get("settings")).get("clients")
    if not isinstance(clients, list):
        return []
    return [c for c in clients if isinstance(c, dict)]


def same_email(a: Any, b: str) -> bool:
    """The panel compares emails without case."""
    return isinstance(a, str) and a.lower() == b.lower()


def find_client(inbound: Mapping[str, Any], email: str) -> Client | None:
    for client in clients_of(inbound):
        if same_email(client.get("email"), email):
            return client
    return None


def expiry_ms(moment: datetime) -> int:
    """Absolute milliseconds; at least 1, since 0 means "never" and negatives "from first use"."""
    if moment.tzinfo is None:
        raise ValueError("expiry must be timezone-aware")
    return max(1, round(moment.timestamp() * 1000))


def expiry_from_ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Traffic:
    """A client's ``client_traffics`` row."""

    used: int
    """Bytes up and down since the last reset."""
    enabled: bool
    """The panel's own flag: off once the client ran out of traffic or time."""

    @classmethod
    def from_row(cls, row: Any) -> Traffic | None:
        if not isinstance(row, Mapping):
            return None
        used = sum(_count(row.get(field)) for field in ("up", "down"))
        return cls(used=used, enabled=row.get("enable") is not False)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def apply_spec(
    client: Mapping[str, Any],
    spec: AccountSpec,
    *,
    sub_id: str,
    flow: str,
    comment: str | None = None,
) -> Client:
    """``client`` with the spec's absolute values, enabled, and ``comment`` unless None;
    its credentials kept."""
    updated = dict(client)
    # The panel matches emails without case but would call a case change a duplicate.
    if not same_email(updated.get("email"), spec.name):
        updated["email"] = spec.name
    updated["limitIp"] = spec.device_limit or 0
    updated["totalGB"] = spec.traffic_limit_bytes or 0
    updated["expiryTime"] = expiry_ms(spec.expires_at)
    updated["enable"] = True
    updated["tgId"] = spec.telegram_id
    if not isinstance(updated.get("subId"), str) or not updated["subId"]:
        updated["subId"] = sub_id
    if flow:
        updated["flow"] = flow
    if comment is not None:
        updated["comment"] = comment
    return updated


def differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(field) != wanted.get(field) for field in MANAGED if field in wanted)


def new_client(
    spec: AccountSpec,
    identity: Identity,
    *,
    protocol: str | None,
    flow: str,
    inbound_settings: Mapping[str, Any] | None = None,
    like: Mapping[str, Any] | None = None,
    comment: str | None = None,
) -> Client:
    """A client for ``spec``. ``protocol`` None: let the panel fill what it needs (v3.1+).

    ``like``: the same account's client on another inbound, whose credentials,
    subscription id and comment are reused, so both inbounds serve one subscription.
    """
    name = spec.name
    client: Client = {
        "id": identity.client_uuid(name),
        "email": name,
        "subId": identity.sub_id(name),
        "comment": "",
        "reset": 0,
    }
    if protocol == "trojan":
        client["password"] = identity.password(name)
    elif protocol == "shadowsocks":
        method = str((inbound_settings or {}).get("method", ""))
        size = _SHADOWSOCKS_KEY_BYTES.get(method)
        client["password"] = (
            identity.shadowsocks_key(name, size) if size else identity.password(name)
        )
    elif protocol in ("hysteria", "hysteria2"):
        client["auth"] = identity.password(name)
    if like is not None:
        for field in ("id", "subId", "password", "auth", "comment"):
            if field in client and isinstance(like.get(field), str) and like[field]:
                client[field] = like[field]
    vless = protocol in (None, "vless")
    flow = flow if vless else ""
    return apply_spec(client, spec, sub_id=client["subId"], flow=flow, comment=comment)


def disabled(client: Mapping[str, Any]) -> Client:
    updated = dict(client)
    updated["enable"] = False
    return updated


def from_record(record: Mapping[str, Any]) -> Client:
    """A v3.1+ client record (``GET clients/get/:email``) as the client the API takes back.

    The record's ``id`` is the panel's row number and ``uuid`` the credential; the client
    object wants the credential as ``id``.
    """
    client = {
        key: value
        for key, value in record.items()
        if key not in ("id", "uuid", "createdAt", "updatedAt", "inboundIds", "traffic")
    }
    client["id"] = record.get("uuid") or ""
    if client.get("reverse") is None:
        client.pop("reverse", None)
    return client


def to_account(
    name: str, client: Mapping[str, Any], subscription_base_url: str, traffic: Traffic | None
) -> Account:
    """The account as the panel has it: usable when the client is enabled, its time has
    not run out and it is within its traffic (worked out from the figures: the panel's own
    flag lags behind by one run of its job)."""
    sub_id = client.get("subId")
    expires_at = expiry_from_ms(client.get("expiryTime"))
    total = _count(client.get("totalGB"))
    limited = traffic is not None and 0 < total <= traffic.used
    lapsed = expires_at is not None and expires_at <= datetime.now(UTC)
    enabled = client.get("enable") is True and not limited and not lapsed
    if traffic is not None and not traffic.enabled and not limited:
        enabled = False
    return Account(
        name=name,
        reference=name,
        access_url=f"{subscription_base_url}{sub_id}" if isinstance(sub_id, str) and sub_id else "",
        expires_at=expires_at,
        enabled=enabled,
        limited=limited and client.get("enable") is True and not lapsed,
        used_bytes=traffic.used if traffic is not None else None,
        traffic_limit_bytes=total or None,
    )
