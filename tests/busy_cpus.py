"""``--busy-cpus N``: run the suite with N processes spinning at full speed beside it.

A test that passes only on an idle machine is a defect: CI runs the suite with every core
kept busy, so a deadline sized for an idle machine, or a pacing that sends faster when
the process is starved, fails there instead of in production.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.switches import hide, switch

SPIN = "while True:\n    pass\n"
_spinners: list[subprocess.Popen[bytes]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--busy-cpus",
        type=int,
        default=int(switch("VPNBOT_TEST_BUSY_CPUS") or "0"),
        metavar="N",
        help="keep N CPUs busy with spinning processes while the tests run "
        "(default: $VPNBOT_TEST_BUSY_CPUS or 0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    hide()
    count: int = config.getoption("busy_cpus")
    if count < 0:
        raise pytest.UsageError("--busy-cpus must be 0 or more")
    if count and not hasattr(config, "workerinput"):
        for _ in range(count):
            _spinners.append(subprocess.Popen([sys.executable, "-c", SPIN]))


def pytest_report_header(config: pytest.Config) -> str | None:
    if not _spinners:
        return None
    return (
        f"busy CPUs: {len(_spinners)} spinning processes beside the tests ({os.cpu_count()} CPUs)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _spinners:
        one, five, _ = os.getloadavg()
        terminalreporter.write_line(
            f"busy CPUs: {len(_spinners)} spinners ran throughout; load average {one:.1f} (1 min), "
            f"{five:.1f} (5 min)"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    while _spinners:
        spinner = _spinners.pop()
        spinner.kill()
        spinner.wait()
