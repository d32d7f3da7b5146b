"""The HTTP side of payment webhooks: verify, credit, and answer so the provider behaves.

A forged or unreadable delivery gets 401/400 and changes nothing. A delivery we could not
process for a transient reason, or one that arrives before billing is wired (starting up),
gets 503, so the provider delivers it again (Crypto Pay retries for days); a replay of one
already credited gets 200 (an idempotent skip). An authentic delivery that does not match
its intent (another amount) gets 200 too: it is refused and alerted, and delivering it again
cannot change that.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.failures import classify
from runtime.logs import correlation, get_logger, log_failure
from runtime.plugin_api.payments import WebhookRejected

from ._service import Billing

_log = get_logger("webhooks")


def payment_webhook_routes(billing: Callable[[], Billing]) -> list[Route]:
    """``POST /webhooks/payments/{provider}``; ``billing`` is looked up per request, since
    it exists only once the database is connected."""

    async def receive(request: Request) -> Response:
        provider = request.path_params["provider"]
        body = await request.body()
        with correlation(None, provider=provider):
            try:
                service = billing()
            except Exception as exc:
                # Not wired yet (the runtime is still connecting to the database): the
                # provider must deliver it again, so this is a 503, not a bug's 500.
                _log.warning(
                    "webhook before billing is ready",
                    operation="webhook",
                    failure_type="infra_error",
                    outcome="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                )
                return JSONResponse({"ok": False, "error": "not_ready"}, status_code=503)
            try:
                results = await service.webhook(provider, dict(request.headers), body)
            except WebhookRejected as exc:
                _log.warning(
                    "webhook rejected",
                    operation="webhook",
                    failure_type="domain_error",
                    outcome="failed",
                    reason=str(exc),
                )
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=exc.status)
            except Exception as exc:
                failure = log_failure(_log, exc, operation="webhook")
                status = 503 if classify(exc).transient else 500
                return JSONResponse({"ok": False, "error": failure.type.value}, status_code=status)
        return JSONResponse({"ok": True, "results": [r.verdict.value for r in results]})

    return [Route("/webhooks/payments/{provider}", receive, methods=["POST"])]
