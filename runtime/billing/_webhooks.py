"""The HTTP side of payment webhooks: authenticate, then credit, and answer so the provider
behaves.

``POST /webhooks/payments/{provider}``, in this order:

1. a provider without a webhook (Telegram's own payments), or no such provider: 404;
2. the provider's ``WebhookReceiver.authenticate`` on the raw request; refused: 401.
   Neither step reads the body, touches the database or raises an alert: a forged request
   costs one warning line at most;
3. only then billing: before it is wired (the runtime is still connecting to the
   database) 503, so the provider delivers again (Crypto Pay retries for days); a delivery
   we could not process for a transient reason, 503 as well;
4. an authentic delivery that cannot be understood: 400; one that is credited, or a replay
   of one (an idempotent skip), or one refused because it does not match its intent
   (recorded and alerted; delivering it again cannot change that): 200.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.failures import FailureType, Outcome
from runtime.logs import correlation, get_logger, log_failure
from runtime.plugin_api.payments import PaymentProvider, WebhookRejected

from ._doors import authenticate, receivers_of
from ._service import Billing

_log = get_logger("webhooks")


def _fixed(providers: list[PaymentProvider]) -> Callable[[], list[PaymentProvider]]:
    return lambda: providers


def payment_webhook_routes(
    billing: Callable[[], Billing],
    *,
    providers: Iterable[PaymentProvider] | Callable[[], Iterable[PaymentProvider]],
) -> list[Route]:
    """The payment webhook route. ``providers`` are the loaded ones (known before the
    database is), or a function returning them per request (a reload replaces them);
    ``billing`` is looked up per request, once a delivery is authentic, since it exists
    only once the database is connected."""
    loaded = providers if callable(providers) else _fixed(list(providers))

    async def receive(request: Request) -> Response:
        name = request.path_params["provider"]
        receiver = receivers_of(loaded()).get(name)
        if receiver is None:
            _log.info(
                "webhook for no receiver",
                operation="webhook",
                outcome=Outcome.FAILED,
                path=request.url.path[:120],
            )
            return _refused(404, "not_found")
        body = await request.body()
        with correlation(None, provider=name):
            try:
                delivery = await authenticate(name, receiver, request.headers, body)
            except WebhookRejected:
                return _refused(401, "unauthorized")
            try:
                service = billing()
            except Exception as exc:
                _log.warning(
                    "webhook before billing is ready",
                    operation="webhook",
                    failure_type="infra_error",
                    outcome=Outcome.FAILED,
                    reason=f"{type(exc).__name__}: {exc}",
                )
                return JSONResponse({"ok": False, "error": "not_ready"}, status_code=503)
            try:
                results = await service.receive(name, delivery)
            except WebhookRejected as exc:
                _log.warning(
                    "webhook not understood",
                    operation="webhook",
                    failure_type="domain_error",
                    outcome=Outcome.FAILED,
                    reason=str(exc)[:200],
                )
                return JSONResponse({"ok": False, "error": "bad_request"}, status_code=400)
            except Exception as exc:
                failure = log_failure(_log, exc, operation="webhook")
                if failure.type is FailureType.DOMAIN:
                    status = 400  # the peer's bad values: a domain error, never a 500
                else:
                    status = 503 if failure.transient else 500
                return JSONResponse({"ok": False, "error": failure.type.value}, status_code=status)
        return JSONResponse({"ok": True, "results": [r.verdict.value for r in results]})

    return [Route("/webhooks/payments/{provider}", receive, methods=["POST"])]


def _refused(status: int, error: str) -> Response:
    """A refusal that closes the connection: the request's body may not have been read
    (a 404 reads none), and a connection kept open with an unread body can swallow the
    sender's next request."""
    return JSONResponse(
        {"ok": False, "error": error}, status_code=status, headers={"connection": "close"}
    )
