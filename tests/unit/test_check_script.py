"""`sh tests/check.sh` sets up and runs the tests without changing what `vpnbot run` runs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stands in for a tool of the venv: records how it was called, and succeeds.
_RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
"""


def _recorder(path: Path, log: Path) -> None:
    path.write_text(_RECORDER.format(log=log))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_check_sh_installs_nothing_but_the_project_into_the_venv(tmp_path: Path) -> None:
    """The example plugin installed into .venv would join every `vpnbot run` from it."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "check.sh", project / "tests" / "check.sh")
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    log = tmp_path / "calls.log"
    for tool in ("python", "ruff", "mypy", "pytest"):
        _recorder(venv_bin / tool, log)
    system_bin = tmp_path / "bin"
    system_bin.mkdir()
    _recorder(system_bin / "chromium", log)  # present: nothing to install from apt
    _recorder(system_bin / "promtool", log)

    done = subprocess.run(
        ["sh", str(project / "tests" / "check.sh")],
        env={**os.environ, "PYTHON": sys.executable, "PATH": f"{system_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    installs = [call for call in calls if call.startswith("python -m pip install")]
    assert installs, calls
    assert [call for call in installs if "example_package" in call] == []
    assert any(call.startswith("pytest ") for call in calls)
    example_mypy = [c for c in calls if c.startswith("mypy") and "example_package" in c]
    assert example_mypy, "the example plugin's type check is gone"
