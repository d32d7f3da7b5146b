"""Fake peers that follow the documented behaviour of the real ones, awkward parts included.

Each is a real HTTP server on loopback (``async with fake.running() as url``) with faults
on demand: ``fail_next``, ``rate_limit_next``, ``delay_next``.
"""

from ._base import FakePeer, Fault, RecordedRequest

__all__ = ["FakePeer", "Fault", "RecordedRequest"]
