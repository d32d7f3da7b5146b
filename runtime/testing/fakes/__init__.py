"""Fake peers that follow the documented behaviour of the real ones, awkward parts included.

Each is a real HTTP server on loopback (``async with fake.running() as url``) with faults
on demand: ``fail_next``, ``rate_limit_next``, ``delay_next``. The VPN panels' fakes also
serve their subscription endpoints in the panel's format (what a user's access URL gives a
client, see ``runtime.testing.links``) and count each account's traffic, which a test
spends with ``use_traffic`` and the panel's reset call sets back to zero.
"""

from ._base import FakePeer, Fault, RecordedRequest

__all__ = ["FakePeer", "Fault", "RecordedRequest"]
