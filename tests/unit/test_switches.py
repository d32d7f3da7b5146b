"""The suite's VPNBOT_TEST_* switches never reach the processes the tests start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import os
import subprocess
import sys

from runtime.config import load_settings
from tests.switches import switch


PRINT_SETTINGS = "import os; print([n for n in os.environ if n.startswith('VPNBOT_')])"


def test_started_processes_see_no_switch_and_the_suite_still_reads_it():
    assert not [name for name in os.environ if name.startswith("VPNBOT_TEST_")]
    assert switch("VPNBOT_TEST_BUSY_CPUS") == "0"
    child = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        capture_output=True, text=True, check=True,
    )
    assert child.stdout.strip() == "[]"
    load_settings(None, environ=dict(os.environ))  # the runtime takes this environment
"""


def test_a_switch_set_for_the_suite_does_not_become_a_setting(tmp_path: Path) -> None:
    """``VPNBOT_TEST_BUSY_CPUS=0 sh tests/check.sh``, as the README offers, once made every
    ``vpnbot run`` a test started refuse the unknown setting and exit."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "VPNBOT_TEST_BUSY_CPUS": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.busy_cpus",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path / "test_inner.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
