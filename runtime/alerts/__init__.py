"""Alerts for admins: a model, a pipeline that throttles and delivers, and the log sink.

Anything may call ``AlertPipeline.submit(alert)`` (it never raises); the pipeline's ``run``
is an actor that delivers to every sink concurrently with a per-sink timeout. Sinks follow
``runtime.plugin_api.AlertSink``; plugins add them through the ``vpnbot_alert_sinks`` hook.
"""

from ._log_sink import LogSink
from ._model import Alert, AlertDeliveryError, AlertStats, Severity
from ._pipeline import AlertPipeline

__all__ = ["Alert", "AlertDeliveryError", "AlertPipeline", "AlertStats", "LogSink", "Severity"]
