"""The instance id: its default, what the config accepts, and the names built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.app._identity import default_instance_id, systemd_unit
from runtime.config import ConfigError, load_settings
from runtime.metrics import Metrics
from runtime.plugin_api import Services

CGROUP_V2 = "0::/system.slice/vpnbot.service\n"
CGROUP_V1 = (
    "12:pids:/system.slice/vpnbot@eu-2.service\n1:name=systemd:/system.slice/vpnbot@eu-2.service\n"
)
USER_SERVICE = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/vpnbot.service\n"
LOGIN_SHELL = "0::/user.slice/user-1000.slice/session-4.scope\n"


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        (CGROUP_V2, "vpnbot"),
        (CGROUP_V1, "vpnbot@eu-2"),
        (USER_SERVICE, "vpnbot"),
        (LOGIN_SHELL, None),
        ("0::/\n", None),
        ("", None),
    ],
)
def test_the_systemd_unit_is_read_from_the_cgroup(cgroup: str, unit: str | None) -> None:
    assert systemd_unit(cgroup) == unit


def test_the_default_is_host_name_and_unit(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(CGROUP_V1)
    assert default_instance_id(hostname="vpn-1", cgroup_file=cgroup) == "vpn-1/vpnbot@eu-2"
    cgroup.write_text(LOGIN_SHELL)  # started by hand: the same for every such process
    assert default_instance_id(hostname="vpn-1", cgroup_file=cgroup) == "vpn-1/vpnbot"
    missing = tmp_path / "not-linux"
    assert default_instance_id(hostname="vpn-1", cgroup_file=missing) == "vpn-1/vpnbot"


def test_the_default_is_a_valid_instance_id(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/vpn\\x2dbot:odd.service\n")
    value = default_instance_id(hostname="host name:with colon", cgroup_file=cgroup)
    assert value == "host-name-with-colon/vpn-x2dbot-odd"
    settings = load_settings(None, environ={"VPNBOT_SERVICE__INSTANCE_ID": value})
    assert settings.service.instance_id == value
    Services(settings, Metrics(), instance_id=value)


@pytest.mark.parametrize("value", ["vpn-1", "eu.vpn-2", "host/vpnbot@2", "A_b"])
def test_instance_ids_the_config_accepts(value: str) -> None:
    settings = load_settings(None, environ={"VPNBOT_SERVICE__INSTANCE_ID": value})
    assert settings.service.instance_id == value


@pytest.mark.parametrize("value", ["", "vpn:1", "vpn 1", "-vpn", "x" * 101, "vpn\n1"])
def test_instance_ids_the_config_refuses(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ={"VPNBOT_SERVICE__INSTANCE_ID": value})
    assert "service.instance_id" in str(refused.value)


def test_names_built_on_the_instance_id() -> None:
    services = Services(load_settings(None, environ={}), Metrics(), instance_id="vpn-1")
    assert services.lease_holder("notifier") == "vpn-1:notifier"
    owners = {services.claim_owner("notifier") for _ in range(5)}
    assert len(owners) == 5  # a new owner per start: a late outcome never counts for another
    assert all(o.startswith(services.owner_prefix + "notifier:") for o in owners)
    assert services.owner_prefix == "vpn-1:"
    with pytest.raises(ValueError, match="':'"):
        Services(load_settings(None, environ={}), Metrics(), instance_id="a:b")
