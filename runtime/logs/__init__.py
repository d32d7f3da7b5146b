"""Structured logs: JSON lines in production, readable on a terminal, secrets masked.

- ``configure_logging(...)`` once at start (again at will); ``get_logger(component)``.
- ``correlation()`` binds a correlation id for a unit of work.
- ``log_failure(logger, exc, operation=...)`` classifies a failure and logs it once with
  ``component``, ``operation``, ``correlation_id``, ``failure_type`` and ``outcome``.
- ``redact_processor`` is a plain structlog processor, usable in any pipeline.
- Python warnings become log lines once the logging is configured; ``hold_warnings()``
  before importing the libraries keeps the ones raised earlier for then.
"""

from . import _structlog_import  # noqa: F401 - first: structlog is imported lean
from ._context import correlation, current_correlation_id, new_correlation_id
from ._failure_log import log_failure
from ._redact import REDACTED, add_secrets, redact_processor, redact_text
from ._setup import configure_logging, get_logger, reset_logging
from ._warnings import hold_warnings

__all__ = [
    "REDACTED",
    "add_secrets",
    "configure_logging",
    "correlation",
    "current_correlation_id",
    "get_logger",
    "hold_warnings",
    "log_failure",
    "new_correlation_id",
    "redact_processor",
    "redact_text",
    "reset_logging",
]
