"""A raw HTTP/1.1 client for testing doors as attackers use them: bodies without end,
bodies that stop, heads a byte at a time, and a wait for the server to hang up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import trio

CHUNK = 64 * 1024
ENDLESS = 256 * 1024 * 1024
"""What a client tries to send 'without end': far more than any limit or socket buffer."""
WAIT = 60.0
"""How long a client waits for the server to answer or hang up: never reached when the
server does its job."""


@dataclass
class Outcome:
    sent: int = 0
    """Bytes the client got onto the wire before the server hung up."""
    response: bytes = b""

    @property
    def status(self) -> int | None:
        if not self.response.startswith(b"HTTP/1.1 "):
            return None
        return int(self.response.split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        return self.response.partition(b"\r\n\r\n")[2]


def chunked(total: int) -> Iterator[bytes]:
    """A chunked body of ``total`` bytes, chunk by chunk, then its terminator."""
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        yield f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"
        sent += size
    yield b"0\r\n\r\n"


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: vpnbot", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def until_hung_up(
    port: int, parts: Iterator[bytes], *, pause: float = 0.0, host: str = "127.0.0.1"
) -> Outcome:
    """Send ``parts`` (pausing between them) while reading, until the server closes the
    connection; fails if it has not within ``WAIT``."""
    outcome = Outcome()
    stream = await trio.open_tcp_stream(host, port)
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            try:
                for part in parts:
                    await stream.send_all(part)
                    outcome.sent += len(part)
                    if pause:
                        await trio.sleep(pause)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await trio.sleep_forever()  # the server hangs up, not the client

        nursery.start_soon(send)
        with trio.fail_after(WAIT):
            while True:
                try:
                    data = await stream.receive_some()
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                outcome.response += data
        nursery.cancel_scope.cancel()
    return outcome
