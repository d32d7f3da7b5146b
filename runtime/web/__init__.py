"""The HTTP endpoint actor: health, readiness, status, metrics, and routes others add."""

from ._actor import HttpEndpoint
from ._app import build_app

__all__ = ["HttpEndpoint", "build_app"]
