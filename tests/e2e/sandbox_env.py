"""The environment a sandbox started by the browser tests runs in."""

from __future__ import annotations

import os

from tests.integration.test_process import ROOT


def sandbox_env(http_port: int) -> dict[str, str]:
    """This process's environment for ``vpnbot run``, minus what would change the run.

    ``VPNBOT_TEST_*`` are the suite's own switches (busy CPUs, screenshots): the runtime
    reads every ``VPNBOT_*`` as a setting and would refuse them. The operator listener is on
    ``http_port``, the public one on any free port, logs in JSON for the tests to read.
    """
    kept = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "VPNBOT_CONFIG") and not k.startswith("VPNBOT_TEST_")
    }
    return {
        **kept,
        "PYTHONPATH": str(ROOT),
        "VPNBOT_HTTP__PORT": str(http_port),
        "VPNBOT_HTTP__PUBLIC__PORT": "0",
        "VPNBOT_SERVICE__LOG_FORMAT": "json",
    }
