"""The Prometheus rules and the Grafana dashboard shipped in deploy/: valid for promtool,
and built only on metrics the service exports (a renamed metric fails here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from runtime.alerts import AlertPipeline
from runtime.metrics import AlertsCollector, BacklogCollector, Metrics, SupervisionCollector
from runtime.storage.backlog import Backlog, Waiting
from runtime.supervision import ActorSpec, Supervisor
from runtime.workers._common import items

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "vpnbot-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "vpnbot-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "vpnbot-dashboard.json"

PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for every target."""

_METRIC = re.compile(r"\b(vpnbot_[a-z0-9_]+)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus; tests/check.sh "
            "installs it when run as root)"
        )
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def as_prometheus_sees_it(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


def exported_series() -> set[str]:
    """Every series name the service's registry can serve, from its real collectors."""
    metrics = Metrics()

    async def idle(ctx: object) -> None:
        pass

    metrics.register(SupervisionCollector(Supervisor([ActorSpec(name="actor", run=idle)])))
    metrics.register(AlertsCollector(AlertPipeline([], throttle_seconds=60)))

    async def backlog() -> Backlog:
        return Backlog({"notify": Waiting(1, 2.0)}, Waiting(1, 3.0))

    waiting = BacklogCollector(backlog)
    metrics.register(waiting)
    trio.run(waiting.refresh)
    items(metrics)
    names: set[str] = set()
    suffixes = {"counter": ["_total", "_created"], "gauge": [""], "histogram": ["_bucket"]}
    for family in metrics.registry.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    return names


def test_the_rules_pass_promtool_check() -> None:
    done = run_promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": as_prometheus_sees_it(expr)}
                    for number, expr in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_series()
    used: dict[str, set[str]] = {}
    for where, expressions in (
        ("rules", rule_expressions()),
        ("dashboard", dashboard_expressions()),
    ):
        for expr in expressions:
            for name in _METRIC.findall(expr):
                used.setdefault(name, set()).add(where)
    assert used, "no vpnbot metric found: the expressions were not read"
    missing = {name: sorted(places) for name, places in used.items() if name not in exported}
    assert missing == {}, f"not exported by the service: {missing}"
    assert {"vpnbot_system_state", "vpnbot_worker_items_total"} <= set(used)


def test_the_rules_cover_the_conditions_operators_asked_for() -> None:
    document = yaml.safe_load(RULES.read_text())
    names = {rule["alert"] for group in document["groups"] for rule in group["rules"]}
    assert {
        "VpnbotInstanceDown",
        "VpnbotActorParked",
        "VpnbotDegradedForLong",
        "VpnbotPaymentsFailing",
        "VpnbotDeadLetters",
        "VpnbotOutboxRetrying",
        "VpnbotTelegramRateLimiting",
        "VpnbotOutboxBacklog",
        "VpnbotInboxLag",
    } <= names
    for group in document["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_is_importable_grafana_json() -> None:
    document = dashboard()
    assert document["uid"] and document["title"]
    assert [i["name"] for i in document["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in document["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
