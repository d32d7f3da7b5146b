"""An alert sink for any service Apprise reaches (Slack, Discord, ntfy, Matrix, e-mail...).

Apprise sends with blocking HTTP calls, so each delivery runs in a worker thread under a
deadline; at the deadline the thread is left to finish on its own (its socket timeouts end
it), and while it runs the next delivery to the same service waits for it rather than
starting more threads. One sink per URL: a service that fails or hangs fails that sink
alone, and the pipeline delivers to the others concurrently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import trio

from runtime.alerts import Alert, AlertDeliveryError, Severity

from . import apprise_log

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

BODY_LIMIT = 4000
"""Characters of alert text sent; Apprise splits or cuts further for each service."""

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_MASS_MENTION = re.compile(r"([@!])(?=(everyone|here|channel|room|all)\b)", re.IGNORECASE)
_URL_PARTS = re.compile(r"[/:@?&=#;,+\s]+")


def plain(text: str) -> str:
    """Text from anywhere made inert: no control characters, no mass mentions.

    Apprise is told the body is plain text, so it escapes markup for services that render
    HTML or Markdown; what escaping cannot stop is a mention that pings a whole room.
    """
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n"))
    return _MASS_MENTION.sub("\\1\u200b", text)


def format_body(alert: Alert) -> str:
    lines = [plain(alert.text), ""]
    lines.append(f"component: {plain(alert.component)}")
    lines.append(f"key: {plain(alert.key)}")
    if alert.correlation_id:
        lines.append(f"correlation id: {plain(alert.correlation_id)}")
    lines.append(f"time: {alert.time.isoformat(timespec='seconds')}")
    if alert.suppressed_count:
        lines.append(f"(+{alert.suppressed_count} similar suppressed since the last one)")
    body = "\n".join(lines)
    return body if len(body) <= BODY_LIMIT else body[: BODY_LIMIT - 1] + "…"


_TAG_CHARACTERS = str.maketrans({"<": "\u2039", ">": "\u203a", "&": "+"})


def format_title(alert: Alert) -> str:
    """One line; no character that starts HTML, which some services render in titles
    (Apprise converts the body for each service, a separate title it passes as it is)."""
    title = " ".join(plain(alert.title).translate(_TAG_CHARACTERS).split())
    return f"[{alert.severity.value.upper()}] {title}"[:250]


def secret_parts(url: str) -> list[str]:
    """Every piece of ``url`` that may be a credential, longest first.

    Everything after the scheme but a host name with a dot in it (a bot token or a
    webhook id in the host's place is masked).
    """
    parts = urlsplit(url)
    host = parts.hostname if parts.hostname and "." in parts.hostname else None
    rest = url.split("://", 1)[-1]
    pieces = {url, rest}
    for piece in _URL_PARTS.split(rest):
        pieces.update({piece, unquote(piece)})
    pieces.discard(host or "")
    return sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def describe(url: str) -> str:
    """What a URL may be called in logs: its scheme, and its host when that is a name."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower() or "?"
    if parts.hostname and "." in parts.hostname:
        return f"{scheme}://{parts.hostname}"
    return f"{scheme}://"


class AppriseSink:
    """Sends each alert at or above ``min_severity`` to one Apprise service.

    ``service`` is the Apprise plugin object built from the URL (``Apprise.instantiate``);
    its socket timeouts are set from ``timeout`` so an abandoned thread ends soon after.
    """

    def __init__(
        self,
        service: NotifyBase,
        url: str,
        *,
        name: str,
        min_severity: Severity = Severity.WARNING,
        timeout: float = 10.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.name = name
        self._service = service
        self._min_rank = _RANK[Severity(min_severity)]
        self._timeout = timeout
        self._where = describe(url)
        self._secrets = secret_parts(url)
        self._threads = trio.CapacityLimiter(1)
        service.socket_connect_timeout = min(float(service.socket_connect_timeout), timeout)
        service.socket_read_timeout = min(float(service.socket_read_timeout), timeout)

    def __repr__(self) -> str:
        return f"AppriseSink(name={self.name!r}, service={self._where!r})"

    async def send(self, alert: Alert) -> None:
        if _RANK[alert.severity] < self._min_rank:
            return
        title, body = format_title(alert), format_body(alert)
        with trio.move_on_after(self._timeout) as scope:
            delivered, lines = await trio.to_thread.run_sync(
                self._notify,
                title,
                body,
                alert.severity,
                limiter=self._threads,
                abandon_on_cancel=True,
            )
        if scope.cancelled_caught:
            raise AlertDeliveryError(f"{self._where} did not answer within {self._timeout:g}s")
        if not delivered:
            why = redact("; ".join(lines), self._secrets) or "no detail"
            raise AlertDeliveryError(f"{self._where} refused the alert: {why}")

    def _notify(self, title: str, body: str, severity: Severity) -> tuple[bool, list[str]]:
        from apprise import NotifyFormat, NotifyType

        kind = {
            Severity.INFO: NotifyType.INFO,
            Severity.WARNING: NotifyType.WARNING,
            Severity.CRITICAL: NotifyType.FAILURE,
        }[severity]
        with apprise_log.collecting() as lines:
            try:
                delivered = bool(
                    self._service.notify(
                        body=body, title=title, notify_type=kind, body_format=NotifyFormat.TEXT
                    )
                )
            except Exception as exc:  # a plugin's bug is this service's failure alone
                lines.append(f"{type(exc).__name__}: {exc}")
                delivered = False
        return delivered, lines
