"""`vpnbot run` as a real process, observed only from outside: HTTP, webhook, notify socket."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.testing.postgres import TestPostgres
from tests import forkserver

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver on loopback that keeps every JSON body it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alert_keys(self) -> list[str]:
        return [body["key"] for body in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()


class NotifyListener:
    """A fake systemd: reads the notify socket continuously (its queue is only ~10 deep)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def write_config(tmp_path: Path, port: int, receiver_url: str, on_exhausted: str, dsn: str) -> Path:
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f"""
[service]
log_format = "json"

[telegram]
enabled = false

[database]
dsn = "{dsn}"

[http]
port = {port}

[http.public]
port = 0

[alerts]
throttle_seconds = 3600

[alerts.webhook]
url = "{receiver_url}"

[plugins]
paths = ["tests.fixtures.crashing_actor_plugin"]

[actors.crashy]
backoff_min_seconds = 0.2
backoff_max_seconds = 5
backoff_multiplier = 2
backoff_jitter = 0
budget_max_failures = 3
budget_window_seconds = 60
on_exhausted = "{on_exhausted}"
"""
    )
    return config


def start(
    config: Path,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    *,
    unset: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    left_out = ("NOTIFY_SOCKET", "WATCHDOG_USEC", *unset)
    env = {k: v for k, v in os.environ.items() if k not in left_out}
    env.update({"PYTHONPATH": str(ROOT), **(extra_env or {})})
    return forkserver.popen(
        [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: Callable[[], Any], timeout: float = 120.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def get_status(port: int) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/status", timeout=1)
    except httpx.HTTPError:
        return None
    return dict(response.json())


def actor(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in document["actors"] if a["name"] == name)


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_crashing_actor_is_restarted_with_backoff_then_parked_and_alerted_once(
    tmp_path: Path, receiver: Receiver, notify: NotifyListener, database_dsn: str
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, receiver.url, "park", database_dsn)
    process = start(config, tmp_path, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    try:
        restarts_seen = []

        def parked() -> dict[str, Any] | None:
            document = get_status(port)
            if document is None:
                return None
            restarts_seen.append(actor(document, "crashy")["restarts"])
            return document if actor(document, "crashy")["state"] == "parked" else None

        document = wait_for(parked)
        crashy = actor(document, "crashy")
        assert crashy["restarts"] == 3
        assert crashy["last_failure"]["type"] == "bug"
        assert "crashy fell over" in crashy["last_failure"]["message"]
        # the status only ever counts up; each restart and its delay is in the log (below):
        # sampling the status over HTTP may miss one on a busy machine
        assert restarts_seen == sorted(restarts_seen) and restarts_seen[-1] == 3
        for name in ("steady", "http", "alerts", "database"):
            assert actor(document, name)["state"] == "running", name
        assert actor(document, "steady")["restarts"] == 0
        assert document["state"] == "degraded"

        wait_for(lambda: "actor_parked:crashy" in receiver.alert_keys())
        time.sleep(0.5)
        assert receiver.alert_keys().count("actor_failed:crashy:bug") == 1
        assert receiver.alert_keys().count("actor_parked:crashy") == 1
        first = receiver.bodies[receiver.alert_keys().index("actor_failed:crashy:bug")]
        assert first["severity"] == "critical" and first["component"] == "crashy"

        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'vpnbot_actor_restarts_total{actor="crashy"} 3.0' in metrics
        assert 'vpnbot_actor_state{actor="crashy",state="parked"} 1.0' in metrics
        assert 'vpnbot_failures_total{component="crashy",failure_type="bug"} 4.0' in metrics
        assert "vpnbot_alerts_suppressed_total 3.0" in metrics
        assert 'vpnbot_alerts_sent_total{sink="webhook"}' in metrics
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr

    delays = [
        line["delay_seconds"]
        for line in log_lines(stdout)
        if line.get("event") == "actor restarting" and line.get("actor") == "crashy"
    ]
    assert delays == [0.2, 0.4, 0.8]

    messages = list(notify.messages)
    assert any(m.startswith("READY=1") for m in messages)
    assert "WATCHDOG=1" in messages
    assert any(m.startswith("STOPPING=1") for m in messages)


def test_escalation_exits_75(tmp_path: Path, receiver: Receiver, database_dsn: str) -> None:
    config = write_config(tmp_path, free_port(), receiver.url, "escalate", database_dsn)
    process = start(config, tmp_path)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 75, stderr
    assert "escalated:crashy" in receiver.alert_keys()
    events = [line.get("event") for line in log_lines(stdout)]
    assert "escalating: shutting the runtime down" in events


def test_invalid_config_exits_78_and_names_every_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        """
[http]
port = 70000
prot = 1

[actors.crashy]
backoff_min_seconds = -1
budget_max_failures = "many"
"""
    )
    result = forkserver.run(
        [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 78
    for key in ("http.port", "http.prot", "backoff_min_seconds", "budget_max_failures"):
        assert key in result.stderr, key
    assert "Traceback" not in result.stderr

    check = forkserver.run(
        [sys.executable, str(ROOT / "supervisor.py"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert check.returncode == 78
    assert "http.prot" in check.stderr


ANY_PORTS = {"VPNBOT_HTTP__PORT": "0", "VPNBOT_HTTP__PUBLIC__PORT": "0"}
"""Listeners on ports of the system's choosing: these runs are about their exit code, and
``run`` binds its ports before anything else (a taken default port would exit 71)."""


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return forkserver.run(
        [sys.executable, str(ROOT / "supervisor.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ANY_PORTS, "PYTHONPATH": str(ROOT)},
    )


def test_unreachable_database_exits_75_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f"""
[http]
port = {free_port()}

[telegram]
enabled = false

[database]
dsn = "postgresql://vpnbot:hunter2-secret@127.0.0.1:{free_port()}/vpnbot"
connect_timeout_seconds = 2
"""
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 75, result.stderr
    output = result.stdout + result.stderr
    assert "database unreachable" in output
    assert "Traceback" not in output
    assert "hunter2-secret" not in output


def test_malformed_dsn_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "vpnbot.toml"
    config.write_text('[database]\ndsn = "mysql://root@localhost/x"\n')
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 78
    assert "database.dsn" in result.stderr
    assert "mysql://root" not in result.stderr


def test_a_database_behind_is_refused_until_migrated(
    tmp_path: Path, postgres: TestPostgres
) -> None:
    dsn = postgres.new_database(migrated=False)
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f'[http]\nport = {free_port()}\n[telegram]\nenabled = false\n[database]\ndsn = "{dsn}"\n'
    )
    refused = run_cli("run", "--config", str(config))
    assert refused.returncode == 78, refused.stderr
    assert "vpnbot migrate" in refused.stdout + refused.stderr

    migrated = run_cli("migrate", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_initial" in migrated.stdout
    again = run_cli("migrate", "--config", str(config))
    assert again.returncode == 0 and "up to date" in again.stdout


# -- the configuration: check-config refuses what run refuses -------------------------------

TOKEN = "123456789:AAHprocessTestBotToken_0123456789ab"
MONTH_FOR_STARS = """
[plans.month]
title = { en = "1 month" }
duration_days = 30
backend = "marzban"
prices = { stars = { XTR = 150 } }
"""
BAD_CONFIGS = {
    "token-shape": ('[telegram]\ntoken = "hello"\n', {"telegram.token"}),
    "no-telegram-and-unknown-names": (
        MONTH_FOR_STARS
        + '[trial]\nenabled = true\nbackend = "xui"\n'
        + "[actors.payment_reconciler]\ninterval_seconds = 60\n"
        + "[actors.database]\nbackoff_max_seconds = 0.5\n",
        {
            "telegram.token",
            "plans.month.backend",
            "plans.month.prices.stars",
            "trial.backend",
            "actors.payment_reconciler",
            "actors.database.backoff_max_seconds",
        },
    ),
    "bot-policy-and-typo": (
        f'[telegram]\ntoken = "{TOKEN}"\n'
        + "[actors.bot]\nbackoff_min_seconds = 120\n[actors.reconciliaton]\nenabled = false\n",
        {"actors.bot.backoff_min_seconds", "actors.reconciliaton"},
    ),
    "price-the-provider-does-not-take": (
        f'[telegram]\ntoken = "{TOKEN}"\n'
        + MONTH_FOR_STARS.replace("XTR = 150", "RUB = 19900")
        + "[plugins.settings.telegram_payments]\n"
        + '[plugins.settings.marzban]\nbase_url = "http://127.0.0.1:9"\n'
        + 'username = "admin"\npassword = "panel-password"\n',
        {"plans.month.prices.stars.RUB"},
    ),
}


def _unreachable_database() -> str:
    """A run that gets past the checks stops here quickly (exit 75), never hangs."""
    return (
        f'[database]\ndsn = "postgresql://vpnbot:pw@127.0.0.1:{free_port()}/vpnbot"\n'
        "connect_timeout_seconds = 2\n"
    )


def _cli(*args: str) -> subprocess.Popen[str]:
    return forkserver.popen(
        [sys.executable, str(ROOT / "supervisor.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ANY_PORTS, "PYTHONPATH": str(ROOT)},
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def _config_errors(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("config error: "))


def test_check_config_refuses_what_run_refuses(tmp_path: Path) -> None:
    """Both commands, as processes, on the same files: the same exit code and the same lines."""
    started = {}
    for name, (text, _) in BAD_CONFIGS.items():
        config = tmp_path / f"{name}.toml"
        config.write_text(text + _unreachable_database())
        started[name] = (_cli("run", "--config", str(config)), _cli("check-config", str(config)))
    for name, (run, check) in started.items():
        run_code, _, run_err = _finish(run)
        check_code, check_out, check_err = _finish(check)
        assert (run_code, check_code) == (78, 78), (name, run_err, check_err)
        assert "Traceback" not in run_err + check_err, name
        assert _config_errors(run_err) == _config_errors(check_err), name
        paths = {line.split(": ")[1] for line in _config_errors(check_err)}
        assert paths == BAD_CONFIGS[name][1], name
        assert "config ok" not in check_out


def test_what_check_config_accepts_run_starts_and_both_warn_alike(tmp_path: Path) -> None:
    config = tmp_path / "workers-only.toml"
    config.write_text(
        "[telegram]\nenabled = false\n[actors.notifier]\ninterval_seconds = 2\n"
        + _unreachable_database()
    )
    run_code, run_out, run_err = _finish(_cli("run", "--config", str(config)))
    check_code, check_out, check_err = _finish(_cli("check-config", str(config)))
    assert check_code == 0, check_err
    assert check_out.strip() == f"config ok: {config}"
    assert check_err.splitlines() == [
        "config warning: actors.notifier: not run with this configuration: has no effect"
    ]
    assert run_code == 75, run_err  # past every check, stopped by the database
    warnings = [line for line in log_lines(run_out) if line.get("event") == "config warning"]
    assert [(w["path"], w["level"]) for w in warnings] == [("actors.notifier", "warning")]


# -- the log: every line JSON, and the operator guide's jq recipes work on it ---------------

GUIDE = ROOT / "systemd" / "README.md"
RECIPE = re.compile(r"^journalctl -u vpnbot -o cat \| jq (.+)$", re.MULTILINE)
"""A recipe of the guide's Logs section: what follows ``jq`` is its arguments."""
SYSTEMD_LINES = ("Starting vpnbot.service - vpnbot...", "vpnbot.service: Deactivated successfully.")
"""Lines the journal of the unit holds besides the service's own (``journalctl -u``)."""


def _json_values(text: str) -> list[Any]:
    """Every JSON value in ``text`` (jq prints objects over several lines)."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        value, index = decoder.raw_decode(text, index)
        values.append(value)
    return values


def _jq(arguments: list[str], journal: str) -> list[Any]:
    """A recipe's jq run on ``journal``; without jq, the same filter done in Python."""
    jq = shutil.which("jq")
    if jq is not None:
        result = subprocess.run(
            [jq, *arguments], input=journal, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return _json_values(result.stdout)
    match = re.fullmatch(r'fromjson\? \| select\(\.(\w+) == "([^"]*)"\)', arguments[-1])
    assert arguments[:-1] == ["-R"] and match, f"no jq here, and no Python for {arguments}"
    key, wanted = match.groups()
    found = []
    for line in journal.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if value.get(key) == wanted:
            found.append(value)
    return found


def test_every_line_of_a_real_run_is_json_and_the_guides_recipes_work(tmp_path: Path) -> None:
    """The embedded PostgreSQL without XDG_RUNTIME_DIR makes platformdirs warn; that warning,
    the libraries' lines and ours must all be JSON, as journald collects stdout and stderr."""
    port = free_port()
    config = tmp_path / "vpnbot.toml"
    config.write_text(
        f"""
[http]
port = {port}

[http.public]
port = 0

[telegram]
enabled = false

[database]
data_dir = "{tmp_path / "pgdata"}"

[plugins]
paths = ["tests.fixtures.crashing_actor_plugin"]

[actors.crashy]
backoff_min_seconds = 0.2
backoff_max_seconds = 0.5
budget_max_failures = 2
budget_window_seconds = 60
"""
    )
    process = start(config, tmp_path, unset=("XDG_RUNTIME_DIR",))

    def crashy_parked() -> bool:
        document = get_status(port)
        return document is not None and actor(document, "crashy")["state"] == "parked"

    try:
        wait_for(crashy_parked, timeout=180)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stdout, stderr = _finish(process)
    assert code == 0, stderr

    assert stderr == ""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    assert all(list(line)[:4] == ["timestamp", "level", "component", "event"] for line in lines)
    [warning] = [line for line in lines if line.get("category") == "RuntimeDirWarning"]
    assert (warning["level"], warning["component"]) == ("warning", "warnings")
    assert "XDG_RUNTIME_DIR" in warning["event"]

    journal = "\n".join([SYSTEMD_LINES[0], stdout + stderr, SYSTEMD_LINES[1]])
    recipes = [shlex.split(args) for args in RECIPE.findall(GUIDE.read_text(encoding="utf-8"))]
    assert len(recipes) == 2, "the guide's jq recipes changed: update this test"
    errors = _jq(recipes[0], journal)
    assert errors and all(line["level"] == "error" for line in errors)
    ids = [line.get("correlation_id") for line in lines]
    wanted = next(cid for cid in ids if isinstance(cid, str) and cid != "-")
    by_id = [re.sub(r'"[0-9a-f]+\.\.\."', f'"{wanted}"', arg) for arg in recipes[1]]
    found = _jq(by_id, journal)
    assert len(found) == ids.count(wanted)
    assert all(line["correlation_id"] == wanted for line in found)
