"""Prometheus metrics of one runtime, in a registry of its own (not the global one)."""

from ._alerts import AlertsCollector
from ._backlog import BacklogCollector
from ._registry import Metrics
from ._supervision import SupervisionCollector

__all__ = ["AlertsCollector", "BacklogCollector", "Metrics", "SupervisionCollector"]
