"""A stop request at any point of a start ends it cleanly: exit 0, no process left behind.

The sandbox is started under a subreaper (``subreaper.py``), which becomes the parent of
whatever the start orphans (a PostgreSQL started by ``pg_ctl``, an ``initdb``), so what is
left is found by the process tree of the process started here, never by a name. Each point
is an observable state of the start, waited for with a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.test_process import ROOT, free_port

SUBREAPER = Path(__file__).with_name("subreaper.py")
DEADLINE = 120.0


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every live descendant of ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        if fields[0] == "Z":
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
        names[int(entry)] = name
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append((child, names[child]))
            todo.append(child)
    return found


@dataclass
class Start:
    wrapper: subprocess.Popen[str]
    pid: int
    output: Path
    http_port: int
    data_dir: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def has_in_tree(self, name: str) -> bool:
        return any(comm == name for _, comm in _descendants(self.pid))

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def finish(self) -> dict[str, object]:
        out, _ = self.wrapper.communicate(timeout=DEADLINE)
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return result


def _start(workdir: Path, output: Path) -> Start:
    http_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "VPNBOT_CONFIG")},
        "PYTHONPATH": str(ROOT),
        "VPNBOT_HTTP__PORT": str(http_port),
        "VPNBOT_HTTP__PUBLIC__PORT": "0",
        "VPNBOT_SERVICE__LOG_FORMAT": "json",
        "VPNBOT_DATABASE__DATA_DIR": str(workdir / "pgdata"),
    }
    command = [sys.executable, str(ROOT / "supervisor.py"), "run"]
    command += ["--telegram-port", str(free_port())]
    wrapper = subprocess.Popen(
        [sys.executable, str(SUBREAPER), str(output), *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert wrapper.stdout is not None
    pid = int(wrapper.stdout.readline())
    return Start(wrapper, pid, output, http_port, workdir / "pgdata")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("start-signals")


@pytest.fixture
def started(workdir: Path, tmp_path: Path) -> Iterator[Callable[[], Start]]:
    starts: list[Start] = []

    def start() -> Start:
        starts.append(_start(workdir, tmp_path / f"run-{len(starts)}.log"))
        return starts[-1]

    yield start
    for each in starts:
        if each.wrapper.poll() is None:
            os.kill(each.pid, signal.SIGKILL)
            each.wrapper.communicate(timeout=DEADLINE)


def _stop_when(
    start: Start, point: Callable[[Start], bool], what: str, signum: int = signal.SIGTERM
) -> None:
    deadline = time.monotonic() + DEADLINE
    while not point(start):
        if start.wrapper.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the start never reached {what}:\n{start.log()[-3000:]}")
        time.sleep(0.005)
    os.kill(start.pid, signum)


def _assert_clean(start: Start) -> None:
    result = start.finish()
    assert result["exit"] == 0, start.log()[-3000:]
    assert result["left"] == [], start.log()[-3000:]
    assert not (start.data_dir / "postmaster.pid").exists()


def _server_starting(start: Start) -> bool:
    """The embedded server is starting and the start has not said it is up.

    ``pg_ctl`` alone lives for a few hundred milliseconds on a warm data directory, short
    enough for a starved sampler to miss; the server's own process, before the log line
    that ends the wait, covers the same stretch of the start and lasts longer.
    """
    tree = {comm for _, comm in _descendants(start.pid)}
    if "initdb" in tree:
        return False
    if "pg_ctl" in tree:
        return True
    return "postgres" in tree and '"embedded PostgreSQL started"' not in start.log()


# In this order: the first start finds no data directory and runs initdb.
POINTS: list[tuple[str, Callable[[Start], bool]]] = [
    ("initdb running", lambda s: s.has_in_tree("initdb")),
    ("the server starting", _server_starting),
    ("the plugins loaded", lambda s: '"plugin loaded"' in s.log()),
    ("the server started", lambda s: '"embedded PostgreSQL started"' in s.log()),
    ("ready", Start.ready),
]


def test_a_sigterm_at_any_point_of_a_start_exits_0_and_leaves_nothing(
    started: Callable[[], Start], workdir: Path
) -> None:
    assert not (workdir / "pgdata").exists()
    for what, point in POINTS:
        start = started()
        _stop_when(start, point, what)
        _assert_clean(start)


def test_a_sigint_while_the_server_starts_exits_0_and_leaves_nothing(
    started: Callable[[], Start], workdir: Path
) -> None:
    """Ctrl+C, as a terminal sends it to the command alone (``kill -INT``)."""
    start = started()
    _stop_when(start, _server_starting, "the server starting", signal.SIGINT)
    _assert_clean(start)
