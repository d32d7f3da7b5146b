"""What a user's access URL gives a VPN client: the proxy configs behind it.

An access URL is either a config itself (``ss://``, ``vless://``...) or a subscription URL
whose answer lists configs one per line, as plain text or base64 (the format panels serve
to clients they do not recognise). ``fetch_configs`` follows it the way a client does.
"""

from __future__ import annotations

import base64
import binascii
import re

import httpx

CONFIG_SCHEMES = ("vless", "vmess", "trojan", "ss", "ssr", "hysteria", "hysteria2", "hy2", "tuic")
_CONFIG = re.compile(rf"^(?:{'|'.join(CONFIG_SCHEMES)})://\S+$")
MAX_SUBSCRIPTION_BYTES = 1_000_000


def is_config(text: str) -> bool:
    return bool(_CONFIG.match(text.strip()))


def configs_in(body: str) -> list[str]:
    """The config lines of a subscription body, decoding base64 when it is that."""
    text = body.strip()
    if text and not is_config(text.splitlines()[0]):
        compact = "".join(text.split())
        try:
            padded = compact + "=" * (-len(compact) % 4)
            decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            text = decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    return [line.strip() for line in text.splitlines() if is_config(line)]


FETCH_TIMEOUT = httpx.Timeout(10.0)


async def fetch_configs(access_url: str) -> list[str]:
    """The configs a client gets from ``access_url``; raises ``httpx`` errors and
    ``ValueError`` for an answer that is not a subscription."""
    if is_config(access_url):
        return [access_url]
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True) as client:
        response = await client.get(access_url, headers={"User-Agent": "vpnbot-contract/1"})
    if response.status_code != 200:
        raise ValueError(f"the subscription answered HTTP {response.status_code}")
    if len(response.content) > MAX_SUBSCRIPTION_BYTES:
        raise ValueError("the subscription answer is too large")
    return configs_in(response.text)
