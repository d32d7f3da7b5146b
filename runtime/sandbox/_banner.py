"""The sandbox's banner: printed once its chat page answers, never before.

A banner that says "chat with the bot" while the page does not answer yet (the database
still starting) or never will (its port taken) sends the reader to a dead link. So the
sandbox asks for the page itself, on the operator listener, and prints the banner after the
first 200; then it says when the bot is ready too (what ``/readyz`` reports), which may
come later on a first start (the bot's import).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio

from runtime.logs import get_logger
from runtime.plugin_api.peer import shared_tls_context

POLL_SECONDS = 0.2
REQUEST_TIMEOUT = 5.0


def banner(operator: str, public: str | None) -> str:
    lines = [
        "",
        "vpnbot sandbox: the real runtime against local stand-ins",
        f"  chat with the bot:  {operator}/sandbox",
        f"  actor table:        {operator}/status",
        f"  metrics:            {operator}/metrics",
    ]
    if public is not None:
        lines.append(f"  webhooks (public):  {public}/webhooks/payments/<provider>")
    return "\n".join([*lines, "  stop:               Ctrl+C", ""])


async def answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(url, timeout=REQUEST_TIMEOUT)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def wait_until_answers(client: httpx.AsyncClient, url: str) -> None:
    # What is awaited is an answer over HTTP, as a browser would get it: no event says so.
    while not await answers(client, url):  # noqa: ASYNC110
        await trio.sleep(POLL_SECONDS)


def _print(text: str) -> None:
    print(text, flush=True)


async def announce_when_served(
    operator: str,
    public: str | None,
    ready: trio.Event,
    say: Callable[[str], None] = _print,
) -> None:
    """Print the banner once ``{operator}/sandbox`` answers 200, then a line once the
    supervisor is ``ready`` (every critical actor up: what ``/readyz`` reports). Runs until
    both happened (the caller cancels it at a stop).

    The page is asked for until it answers; while its listener is not serving yet, a
    request waits in the socket's backlog (bound at the start) rather than being refused,
    so this is a few requests, not a busy loop. Readiness is waited for in-process."""
    async with httpx.AsyncClient(verify=shared_tls_context()) as client:
        await wait_until_answers(client, f"{operator}/sandbox")
    get_logger("sandbox").info(
        "sandbox ready", chat=f"{operator}/sandbox", status=f"{operator}/status", stop="Ctrl+C"
    )
    say(banner(operator, public))
    if not ready.is_set():
        say("vpnbot: the bot is still starting: it answers in the chat once ready…")
        await ready.wait()
    say("vpnbot: the bot is ready")
