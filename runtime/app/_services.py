"""The services handed to plugins, before the database and the alerts exist."""

from __future__ import annotations

from runtime.config import Settings
from runtime.metrics import Metrics
from runtime.plugin_api import Services

from ._instance_name import default_instance_id


def plugin_services(settings: Settings) -> Services:
    """The services handed to plugins: the database and the alerts come later."""
    instance = settings.service.instance_id or default_instance_id()
    return Services(settings, Metrics(), instance_id=instance)
