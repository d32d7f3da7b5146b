"""The sandbox's icon: browsers ask every origin for ``/favicon.ico``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<circle cx="16" cy="16" r="16" fill="#2aabee"/>'
    '<path d="M7 15.5 24 9l-3 15-5.5-4.5-3 3 .5-4.5L21 12l-10.5 6.5z" fill="#fff"/>'
    "</svg>"
)
"""A paper plane on Telegram blue, as SVG: every current browser takes it as an icon."""


def favicon_route() -> Route:
    async def icon(request: Request) -> Response:
        return Response(
            ICON_SVG,
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return Route("/favicon.ico", icon)
