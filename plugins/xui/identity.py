"""Client credentials derived from the account name, so a retry creates the same client.

A VLESS/VMess UUID, a Trojan password or a subscription id is what lets someone use the
VPN: derived from the name alone (a public uuid5 namespace), anyone who can guess account
names could compute them. They are therefore keyed: the namespace and the other values
come from a key stretched (scrypt) from a secret of the operator's, so a leaked UUID is no
offline oracle for a weak panel password either.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import uuid

_SALT = b"vpnbot/xui/identity/v1"
_SUB_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SUB_ID_LENGTH = 16
"""As long as the panel's own random subscription ids."""


@functools.lru_cache(maxsize=8)
def _stretch(secret: str) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)


class Identity:
    """Deterministic, secret-keyed credentials for one account name."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an identity needs a secret")
        self._key = _stretch(secret)
        self._namespace = uuid.UUID(bytes=self._digest("namespace", "")[:16])

    def __repr__(self) -> str:
        return "Identity(<keyed>)"

    def _digest(self, purpose: str, name: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{name}".encode(), hashlib.sha256).digest()

    def client_uuid(self, name: str) -> str:
        return str(uuid.uuid5(self._namespace, name))

    def sub_id(self, name: str) -> str:
        digest = self._digest("sub_id", name)
        return "".join(_SUB_ID_ALPHABET[b % len(_SUB_ID_ALPHABET)] for b in digest[:SUB_ID_LENGTH])

    def password(self, name: str) -> str:
        """Trojan password, Hysteria auth: 32 hex digits, like the panel's own."""
        return self._digest("password", name)[:16].hex()

    def shadowsocks_key(self, name: str, size: int) -> str:
        """A Shadowsocks-2022 client key: ``size`` bytes (16 or 32), base64."""
        return base64.b64encode(self._digest("shadowsocks", name)[:size]).decode()
