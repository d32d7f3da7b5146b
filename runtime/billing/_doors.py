"""How payments come in: which providers have an HTTP door, and authenticating a delivery.

Nothing reads a webhook delivery before its provider's ``WebhookReceiver.authenticate``
has passed. Whatever goes wrong before that is the sender's problem, not ours: a 401 and a
warning line at most, never an alert, never a log key or alert key of the sender's choosing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runtime.failures import Outcome
from runtime.logs import get_logger
from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    PaymentProvider,
    WebhookReceiver,
    WebhookRejected,
)

_log = get_logger("webhooks")


def receivers_of(providers: Iterable[PaymentProvider]) -> dict[str, WebhookReceiver]:
    """The HTTP doors by provider name: only providers that declare one."""
    return {p.name: p.webhook for p in providers if p.webhook is not None}


async def authenticate(
    provider: str, receiver: WebhookReceiver, headers: Mapping[str, str], body: bytes
) -> AuthenticatedDelivery:
    """The delivery once ``receiver`` accepts it; ``WebhookRejected`` (401) otherwise.

    A receiver that raises anything else while checking is taken as a refusal too (logged
    with the exception's type): an unauthenticated request must not become a ``bug``.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        await receiver.authenticate(lowered, body)
    except WebhookRejected as exc:
        _rejected(provider, str(exc))
        raise WebhookRejected(f"{provider}: not authenticated", status=401) from None
    except Exception as exc:
        _rejected(provider, f"authentication raised {type(exc).__name__}")
        raise WebhookRejected(f"{provider}: not authenticated", status=401) from None
    return AuthenticatedDelivery(lowered, body)


def _rejected(provider: str, reason: str) -> None:
    _log.warning(
        "webhook not authenticated",
        operation="webhook.authenticate",
        provider=provider,
        failure_type="domain_error",
        outcome=Outcome.FAILED,
        reason=reason[:200],
    )
