"""``[alerts.apprise]`` to sinks: one per URL, named by its scheme, unusable URLs left out."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import TYPE_CHECKING

from runtime.alerts import Severity
from runtime.logs import get_logger

from . import apprise_log
from .apprise_sink import AppriseSink, describe

if TYPE_CHECKING:
    from runtime.config import AppriseAlertSettings

_log = get_logger("alerts")


def apprise_sinks(settings: AppriseAlertSettings, *, prefix: str) -> list[AppriseSink]:
    """Sinks named ``<prefix>:<scheme>``, numbered from the second of one scheme on.

    Apprise is imported only when URLs are configured: it loads a hundred service modules.
    """
    urls = settings.url_list()
    if not urls:
        return []
    with warnings.catch_warnings():
        # Apprise imports the deprecated ``imghdr`` on Python 3.12: nothing for operators.
        warnings.simplefilter("ignore", DeprecationWarning)
        from apprise import Apprise

    sinks: list[AppriseSink] = []
    seen: Counter[str] = Counter()
    for number, url in enumerate(urls, start=1):
        with apprise_log.collecting():
            service = Apprise.instantiate(url)
        if service is None:
            _log.error(
                "alerts.apprise.urls: Apprise cannot use this URL; left out",
                url_number=number,
                service=describe(url),
                outcome="skipped",
            )
            continue
        scheme = describe(url).split(":", 1)[0]
        seen[scheme] += 1
        name = f"{prefix}:{scheme}" + (f":{seen[scheme]}" if seen[scheme] > 1 else "")
        sinks.append(
            AppriseSink(
                service,
                url,
                name=name,
                min_severity=Severity(settings.min_severity),
                timeout=settings.timeout_seconds,
            )
        )
    return sinks
