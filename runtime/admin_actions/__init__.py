"""The admin's user editor: set an expiry, change or give a plan, reset traffic or
devices, each once per admin update and each in the audit log."""

from ._service import MAX_YEARS_AHEAD, UNSUPPORTED, UserEditor, expiry_of

__all__ = ["MAX_YEARS_AHEAD", "UNSUPPORTED", "UserEditor", "expiry_of"]
