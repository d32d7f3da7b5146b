"""The plugin loader: every kind of broken plugin is reported and left out, the rest load."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import structlog

from runtime.alerts import Severity
from runtime.config import ConfigError, Settings
from runtime.plugin_api import (
    BUILTIN_PLUGINS,
    DISABLE_ENV_VAR,
    ENTRY_POINT_GROUP,
    LoadedPlugins,
    load_plugins,
)

GOOD = "tests.fixtures.good_plugin"
OTHER = "tests.fixtures.other_plugin"
BROKEN = "tests.fixtures.broken_plugin"
ASYNC = "tests.fixtures.async_hook_plugin"
UNKNOWN = "tests.fixtures.unknown_hook_plugin"
RAISING = "tests.fixtures.raising_hook_plugin"
BAD = "tests.fixtures.bad_result_plugin"


def settings(**plugins: Any) -> Settings:
    return Settings.model_validate({"plugins": plugins})


def ep(name: str, value: str, group: str = ENTRY_POINT_GROUP) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=group)


def load(
    paths: list[str] | None = None,
    *,
    entry_points: list[EntryPoint] | None = None,
    disabled: list[str] | None = None,
    environ: dict[str, str] | None = None,
    plugin_settings: dict[str, dict[str, Any]] | None = None,
) -> LoadedPlugins:
    return load_plugins(
        settings(paths=paths or [], disabled=disabled or [], settings=plugin_settings or {}),
        entry_points=[] if entry_points is None else entry_points,
        environ={} if environ is None else environ,
    )


def names(loaded: LoadedPlugins) -> list[str]:
    return [info.name for info in loaded.plugins]


def test_good_plugin_by_import_path_provides_everything() -> None:
    loaded = load([GOOD])

    assert loaded.problems == []
    [info] = loaded.plugins
    assert (info.name, info.source, info.module) == (GOOD, "config path", GOOD)
    assert info.provides == {
        "payment_providers": ["fake-pay"],
        "vpn_backends": ["fake-vpn"],
        "alert_sinks": ["good-sink"],
        "actors": ["good-actor"],
    }
    assert [p.name for p in loaded.payment_providers()] == ["fake-pay"]
    assert [b.name for b in loaded.vpn_backends()] == ["fake-vpn"]
    assert [s.name for s in loaded.alert_sinks()] == ["good-sink"]
    assert [a.name for a in loaded.actors()] == ["good-actor"]


def test_plugin_settings_reach_the_hook() -> None:
    loaded = load([OTHER], plugin_settings={"other": {"sink_name": "configured"}})
    assert [s.name for s in loaded.alert_sinks()] == ["configured"]


def test_import_error_is_reported_and_the_others_load() -> None:
    with structlog.testing.capture_logs() as logs:
        loaded = load([GOOD, BROKEN, OTHER])

    assert names(loaded) == [GOOD, OTHER]
    [problem] = loaded.problems
    assert (problem.name, problem.source, problem.stage) == (BROKEN, "config path", "import")
    assert "ModuleNotFoundError" in problem.error
    assert isinstance(problem.exception, ImportError)
    [error_log] = [entry for entry in logs if entry["log_level"] == "error"]
    assert error_log["component"] == "plugins"
    assert error_log["plugin"] == BROKEN
    assert error_log["stage"] == "import"


def test_problem_becomes_an_alert() -> None:
    loaded = load([BROKEN])
    [alert] = loaded.problem_alerts()
    assert alert.severity is Severity.CRITICAL
    assert alert.key == f"plugin:{BROKEN}:import"
    assert alert.component == "plugins"
    assert BROKEN in alert.text
    assert "ModuleNotFoundError" in alert.text


def test_async_hookimpl_is_rejected() -> None:
    loaded = load([ASYNC, GOOD])

    assert names(loaded) == [GOOD]
    [problem] = loaded.problems
    assert (problem.name, problem.stage) == (ASYNC, "register")
    assert "vpnbot_alert_sinks is async" in problem.error
    assert [s.name for s in loaded.alert_sinks()] == ["good-sink"]
    assert not loaded.plugin_manager.has_plugin(ASYNC)


def test_unknown_hook_name_is_rejected() -> None:
    loaded = load([UNKNOWN, GOOD])

    assert names(loaded) == [GOOD]
    [problem] = loaded.problems
    assert (problem.name, problem.stage) == (UNKNOWN, "register")
    assert "vpnbot_alert_sink" in problem.error
    assert not loaded.plugin_manager.has_plugin(UNKNOWN)


def test_raising_hook_is_contained_and_the_plugin_left_out_whole() -> None:
    loaded = load([RAISING, GOOD])

    assert names(loaded) == [GOOD]
    [problem] = loaded.problems
    assert (problem.name, problem.stage, problem.hook) == (
        RAISING,
        "call",
        "vpnbot_alert_sinks",
    )
    assert problem.error == "RuntimeError: sink plugin exploded"
    assert [s.name for s in loaded.alert_sinks()] == ["good-sink"]
    # Its actors hook worked, but a plugin with a failing hook is left out entirely.
    assert [a.name for a in loaded.actors()] == ["good-actor"]


@pytest.mark.parametrize(
    ("attribute", "stage", "message"),
    [
        ("not_a_list", "call", "returned str, expected a list"),
        ("sync_sink", "call", "not a AlertSink"),
        ("old_provider", "call", "not a PaymentProvider"),
        ("sync_authenticate", "call", "not a PaymentProvider"),
        ("wrong_argument", "register", "nursery"),
    ],
)
def test_hooks_returning_or_taking_the_wrong_things_are_rejected(
    attribute: str, stage: str, message: str
) -> None:
    loaded = load(entry_points=[ep("bad", f"{BAD}:{attribute}"), ep("good", GOOD)])

    assert names(loaded) == ["good"]
    [problem] = loaded.problems
    assert (problem.name, problem.source, problem.stage) == ("bad", "entry point", stage)
    assert message in problem.error
    assert not loaded.plugin_manager.has_plugin("bad")


def test_duplicate_names_leave_out_the_later_plugin() -> None:
    loaded = load(entry_points=[ep("good", GOOD), ep("dupe", f"{BAD}:duplicate_sink")])

    assert names(loaded) == ["good"]
    [problem] = loaded.problems
    assert problem.name == "dupe"
    assert "alert_sinks 'good-sink'" in problem.error


def test_disabled_by_config_is_not_even_imported() -> None:
    loaded = load([GOOD, BROKEN], disabled=[BROKEN])

    assert names(loaded) == [GOOD]
    assert loaded.problems == []
    assert [info.name for info in loaded.disabled] == [BROKEN]


def test_disabled_by_environment_switch() -> None:
    loaded = load(
        [GOOD, OTHER],
        entry_points=[ep("builtin", "tests.fixtures.good_plugin"), ep("broken", BROKEN)],
        environ={DISABLE_ENV_VAR: f" broken , {OTHER},"},
    )

    assert names(loaded) == ["builtin"]
    assert loaded.problems == []
    assert sorted(info.name for info in loaded.disabled) == sorted(["broken", OTHER])
    # good_plugin came in through the entry point; the same module by path is not loaded twice.
    assert [s.name for s in loaded.alert_sinks()] == ["good-sink"]


def test_fake_entry_points_load_like_built_ins() -> None:
    loaded = load(
        entry_points=[
            ep("good", GOOD),
            ep("broken", BROKEN),
            ep("elsewhere", OTHER, group="someone.else"),
        ],
    )

    assert [(p.name, p.source, p.module) for p in loaded.plugins] == [("good", "entry point", GOOD)]
    [problem] = loaded.problems
    assert (problem.name, problem.source, problem.stage) == ("broken", "entry point", "import")


def test_entry_point_to_a_missing_attribute_is_an_import_problem() -> None:
    loaded = load(entry_points=[ep("typo", f"{GOOD}:no_such_thing")])
    [problem] = loaded.problems
    assert (problem.name, problem.stage) == ("typo", "import")
    assert "AttributeError" in problem.error


def test_built_in_alert_sinks_plugin() -> None:
    config = Settings.model_validate(
        {
            "telegram": {
                "token": "123:AAHsecretBotToken_SECRET_0123456789",
                "admin_chat_ids": [42],
            },
            "alerts": {
                "webhook": {"url": "http://127.0.0.1:9/hook", "secret": "s3cret"},
                "telegram": {"enabled": True},
            },
        }
    )
    loaded = load_plugins(
        config, entry_points=[ep("alert_sinks", "plugins.alert_sinks")], environ={}
    )

    assert loaded.problems == []
    assert [s.name for s in loaded.alert_sinks()] == ["webhook", "telegram"]
    telegram = loaded.alert_sinks()[1]
    assert telegram.chat_ids == [42]  # type: ignore[attr-defined]
    assert "SECRET" not in repr(telegram)


def test_built_in_alert_sinks_plugin_offers_nothing_by_default() -> None:
    loaded = load_plugins(
        Settings(), entry_points=[ep("alert_sinks", "plugins.alert_sinks")], environ={}
    )
    assert names(loaded) == ["alert_sinks"]
    assert loaded.alert_sinks() == []


def test_built_ins_load_with_or_without_installed_metadata() -> None:
    # From a source tree the entry points are missing; the built-in table fills them in.
    loaded = load_plugins(Settings(), environ={})
    assert "alert_sinks" in names(loaded)
    assert all(info.source == "entry point" for info in loaded.plugins)
    assert loaded.problems == []


def test_built_ins_can_be_disabled_too() -> None:
    loaded = load_plugins(Settings(), environ={DISABLE_ENV_VAR: "alert_sinks"})
    assert "alert_sinks" not in names(loaded)
    assert "alert_sinks" in [info.name for info in loaded.disabled]


def test_built_in_table_matches_pyproject() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == dict(BUILTIN_PLUGINS)


def test_describe_lists_loaded_disabled_and_failed_plugins() -> None:
    loaded = load([GOOD, BROKEN, OTHER], disabled=[OTHER])

    rows = {row["name"]: row for row in loaded.describe()}
    assert rows[GOOD]["status"] == "loaded"
    assert rows[GOOD]["source"] == "config path"
    assert rows[GOOD]["module"] == GOOD
    assert rows[GOOD]["provides"] == (
        "payment_providers: fake-pay (on); vpn_backends: fake-vpn (on); "
        "alert_sinks: good-sink (on); actors: good-actor (on) "
        "(the plugin has no vpnbot_offers)"
    )
    assert rows[OTHER]["status"] == "disabled"
    assert rows[BROKEN]["status"] == "failed"
    assert rows[BROKEN]["error"].startswith("import: ModuleNotFoundError")


def test_every_plugins_bad_settings_are_reported_in_one_run() -> None:
    """One run names every plugin whose settings are wrong, not only the first."""
    with pytest.raises(ConfigError) as caught:
        load(
            entry_points=[
                ep("marzban", BUILTIN_PLUGINS["marzban"]),
                ep("outline", BUILTIN_PLUGINS["outline"]),
            ],
            plugin_settings={"marzban": {"base_url": 1}, "outline": {"api_url": 2}},
        )
    paths = {problem.path.split(".")[2] for problem in caught.value.problems}
    assert paths == {"marzban", "outline"}
