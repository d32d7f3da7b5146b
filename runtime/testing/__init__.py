"""Helpers for testing the runtime and plugins written for it."""

from .alerts import RecordingSink, check_alert_sink, sample_alert

__all__ = ["RecordingSink", "check_alert_sink", "sample_alert"]
