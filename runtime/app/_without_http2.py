"""httpx imported without its HTTP/2 support.

httpcore, which httpx's clients use, imports its HTTP/2 connection (and with it h2, hpack
and hyperframe: over 1 MB of a service's memory) whenever h2 is installed, which it is for
the sandbox's stand-ins (hypercorn). Nothing of ours speaks HTTP/2: the peers (Telegram,
Crypto Pay, the VPN panels) are reached over HTTP/1.1, and our listeners speak nothing
else. While httpx and httpcore are imported, h2 is made unimportable; afterwards it is
importable again for whatever else wants it. A client asking for ``http2=True`` then gets
httpcore's own error that h2 is missing.
"""

from __future__ import annotations

import importlib
import sys


def import_httpx_without_http2() -> None:
    """Import httpx and httpcore (which httpx imports only when its first client is
    made), keeping h2 out unless something imported one of them already."""
    if {"httpx", "httpcore", "h2"} & sys.modules.keys():
        return
    sys.modules["h2"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("httpx")
        importlib.import_module("httpcore")
    finally:
        if sys.modules.get("h2", False) is None:
            del sys.modules["h2"]
