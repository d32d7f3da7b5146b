"""The tests' fork server: a forked command is what a started one would be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests import forkserver

COMMAND = [sys.executable, str(forkserver.SCRIPT)]


def both(*args: str, **kwargs: object) -> tuple[subprocess.CompletedProcess[str], ...]:
    """The command forked, and the same started as usual."""
    forked = forkserver.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=300, **kwargs
    )
    started = subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=300, **kwargs
    )
    return forked, started


def test_only_the_projects_commands_are_forked() -> None:
    assert forkserver.forks([*COMMAND, "run"])
    assert not forkserver.forks([sys.executable, "-c", "pass"])
    assert not forkserver.forks(["ip", "netns", "exec", "a", *COMMAND, "run"])
    assert not forkserver.forks([*COMMAND, "run"], start_new_session=True)


def test_output_and_exit_code_are_those_of_a_started_command() -> None:
    forked, started = both("--help")
    assert forked.returncode == started.returncode == 0
    assert forked.stdout == started.stdout
    assert "usage: vpnbot" in forked.stdout


def test_the_working_directory_and_environment_are_the_childs(tmp_path: Path) -> None:
    (tmp_path / "here.toml").write_text('[service]\nlog_level = "loud"\n')
    env = {**os.environ, "PYTHONPATH": str(forkserver.ROOT), "VPNBOT_HTTP__PORT": "eighty"}
    forked, started = both("check-config", "here.toml", cwd=tmp_path, env=env)
    assert forked.returncode == started.returncode == 78
    assert forked.stderr == started.stderr
    assert "service.log_level" in forked.stderr  # the file, found in the working directory
    assert "http.port" in forked.stderr  # the environment


def test_a_killed_child_reports_the_signal_like_any_child() -> None:
    with socket.socket() as silent:  # accepts, never answers: `status` waits on it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = forkserver.popen([*COMMAND, "status", "--url", url], stdout=subprocess.PIPE)
        assert isinstance(process, forkserver.ForkedPopen)
        silent.settimeout(120)
        connection = silent.accept()[0]  # the command is up and asking
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        connection.close()
    assert process.poll() == -signal.SIGKILL
