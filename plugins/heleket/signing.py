"""Heleket's two signatures: of our API requests, and of its webhook deliveries.

Both are ``md5(base64(json) + api_key)`` in hex. For a request the JSON is the exact body we
send. For a webhook it is the delivery's JSON object without its ``sign`` field, encoded
as PHP's ``json_encode`` does by default: compact, non-ASCII as ``\\uXXXX`` and every ``/``
escaped as ``\\/`` (Heleket's documentation verifies it in PHP that way).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any


def php_json(value: Any) -> bytes:
    """``json_encode($value)`` with PHP's default flags, for the JSON types a delivery has."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text.replace("/", "\\/").encode()


def sign_bytes(data: bytes, api_key: str) -> str:
    return hashlib.md5(base64.b64encode(data) + api_key.encode()).hexdigest()


def request_body(params: Mapping[str, Any]) -> bytes:
    """The body we send (compact JSON); its signature is over these exact bytes."""
    return json.dumps(dict(params), separators=(",", ":"), ensure_ascii=True).encode()


def webhook_sign(payload: Mapping[str, Any], api_key: str) -> str:
    """The ``sign`` Heleket puts into a delivery of ``payload`` (``sign`` itself left out)."""
    unsigned = {key: value for key, value in payload.items() if key != "sign"}
    return sign_bytes(php_json(unsigned), api_key)


def signatures_match(expected: str, given: object) -> bool:
    if not isinstance(given, str) or len(given) > 128:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace"))
