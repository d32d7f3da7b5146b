"""Errors: what the Bot API answers, and what the emulator raises at a test that misuses it."""

from __future__ import annotations

from typing import Any

DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot "
    "instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code", "description", "parameters"}``."""

    def __init__(
        self,
        code: int,
        description: str | None = None,
        *,
        retry_after: int | None = None,
        body: str | None = None,
    ) -> None:
        if description is None:
            if code == 429:
                description = f"Too Many Requests: retry after {retry_after or 1}"
            else:
                description = DEFAULT_DESCRIPTIONS.get(code, f"Error {code}")
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = (retry_after or 1) if code == 429 else retry_after
        self.body = body
        """A raw body to answer instead of the JSON error (an HTML page from a proxy)."""

    def payload(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            answer["parameters"] = {"retry_after": self.retry_after}
        return answer


def bad_request(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: {reason}")


def forbidden(reason: str) -> ApiError:
    return ApiError(403, f"Forbidden: {reason}")


QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"


class EmulatorError(Exception):
    """A test asked the emulator for something impossible (an unknown user, no such button).

    Over the HTTP control API it is a 400 answer with the message as ``error``.
    """


class WaitTimeout(AssertionError):
    """A ``wait_for_*`` helper gave up; the message says what was awaited and what the
    chat saw."""
