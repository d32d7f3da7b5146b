"""The suite's own switches, ``VPNBOT_TEST_*``, kept out of the runtime's settings.

They share the runtime's ``VPNBOT_`` prefix, and the runtime reads every ``VPNBOT_*``
variable as a setting: a ``vpnbot run`` a test starts would refuse ``VPNBOT_TEST_BUSY_CPUS``
and exit. ``hide`` (called once, as the suite starts) renames each to ``SUITE_SWITCH_*``,
which the processes the tests start (test workers included) inherit and ignore;
``switch`` reads one under either name.
"""

from __future__ import annotations

import os

PREFIX = "VPNBOT_TEST_"
HIDDEN = "SUITE_SWITCH_"


def hide() -> None:
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        os.environ[HIDDEN + name] = os.environ.pop(name)


def switch(name: str) -> str | None:
    """The value of ``VPNBOT_TEST_...`` ``name``, hidden or not."""
    return os.environ.get(name, os.environ.get(HIDDEN + name))
