"""Our listeners speak HTTP/1.1 only.

Hypercorn switches a plain TCP connection to HTTP/2 whenever the client asks (an
``Upgrade: h2c`` header, or the HTTP/2 preface), and its HTTP/2 code takes the whole server
down when data arrives for a stream whose response is already sent: ``KeyError`` in
``H2Protocol._handle_events`` (pgjones/hypercorn#312 and #334, open). A request refused
before its body is read is exactly that, so any client could stop a listener at will.
Nothing of ours needs HTTP/2 (Telegram, Crypto Pay and reverse proxies talk HTTP/1.1 to
their upstreams), so hypercorn's HTTP/1.1 protocol is made to stay what it is: an h2c
upgrade is ignored, as RFC 9110 allows, and the HTTP/2 preface arrives as a request for
version 2.0, which the limits layer answers 505.
"""

from __future__ import annotations

import h11
import hypercorn.protocol
from hypercorn.protocol.h11 import H11Protocol


class Http1Only(H11Protocol):
    async def _check_protocol(self, event: h11.Request) -> None:
        """Hypercorn's version raises to switch to HTTP/2; this one never does."""


def keep_to_http1() -> None:
    """Have hypercorn's protocol wrapper use ``Http1Only`` (idempotent; process-wide)."""
    hypercorn.protocol.H11Protocol = Http1Only  # type: ignore[attr-defined]
