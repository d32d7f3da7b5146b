"""The configuration: defaults, the example file, overrides, credentials, every error kind,
and the checks against what it names (plugins, actors) that `vpnbot run` and
`vpnbot check-config` share."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys
import tomllib
import types
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from runtime.app import BUILTIN_ACTOR_NAMES, ConfigReport, build_runtime, check_configuration
from runtime.bot import declared_bot_actors
from runtime.config import (
    BOT_TOKEN_SHAPE,
    ActorPolicyOverride,
    ConfigError,
    ConfigProblem,
    Settings,
    load_settings,
    production_problems,
)
from runtime.testing.telegram import DEFAULT_TOKEN

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "vpnbot.example.toml"


def _token(bot_id: int) -> str:
    """Shaped like the tokens @BotFather issues: the bot id, a colon, 35 characters."""
    return f"{bot_id}:AAHconfigTestBotToken_0123456789abc"


TOKEN, FILE_TOKEN, CREDENTIAL_TOKEN, ENV_TOKEN = _token(123456789), _token(1), _token(2), _token(3)

# In the example, "# text" is prose and "#key = value" / "#[table]" is a setting left off.
_DISABLED_SETTING = re.compile(r"^#(?=[\[A-Za-z_])", re.MULTILINE)
_KEY_LINE = re.compile(r"^#?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "vpnbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(
    tmp_path: pathlib.Path, text: str = "", environ: dict[str, str] | None = None
) -> Settings:
    return load_settings(_write(tmp_path, text), environ=environ or {})


def _problems(
    tmp_path: pathlib.Path, text: str = "", environ: dict[str, str] | None = None
) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, environ)
    problems = caught.value.problems
    paths = [problem.path for problem in problems]
    assert len(paths) == len(set(paths)), f"duplicate problems: {problems}"
    return {problem.path: problem.reason for problem in problems}


# --- defaults and the example file --------------------------------------------------------


def test_embedded_defaults_are_valid() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.service.name == "vpnbot"
    assert settings.service.instance_id is None
    assert (settings.http.enabled, settings.http.host, settings.http.port) == (
        True,
        "127.0.0.1",
        8080,
    )
    assert settings.telegram.token is None
    assert settings.alerts.throttle_seconds == 300.0
    assert settings.alerts.telegram.enabled is False
    assert settings.actors == {}
    assert settings.secret_values() == []


def test_example_file_is_valid_and_holds_the_defaults() -> None:
    assert load_settings(EXAMPLE, environ={}) == Settings()


def test_example_file_with_every_setting_turned_on_is_valid(tmp_path: pathlib.Path) -> None:
    text = _DISABLED_SETTING.sub("", EXAMPLE.read_text(encoding="utf-8"))
    settings = _load(tmp_path, text)
    assert settings.telegram.token is not None
    assert settings.alerts.webhook.url is not None
    [override] = settings.actors.values()
    assert all(value is not None for value in override.model_dump().values())


def _unwrap(annotation: Any) -> Any:
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _undocumented(model: type[BaseModel], table: dict[str, Any], prefix: str = "") -> list[str]:
    """Field paths of ``model`` missing from ``table``; a dict of models needs one full entry."""
    missing: list[str] = []
    for name, info in model.model_fields.items():
        path = prefix + name
        if name not in table:
            missing.append(path)
            continue
        annotation = _unwrap(info.annotation)
        if _is_model(annotation):
            missing += _undocumented(annotation, table[name], path + ".")
        elif get_origin(annotation) is dict and _is_model(_unwrap(get_args(annotation)[1])):
            entry_model = _unwrap(get_args(annotation)[1])
            entries = table[name].values()
            if not any(not _undocumented(entry_model, entry) for entry in entries):
                missing.append(f"{path}.<name> (no table with every key)")
    return missing


def test_example_file_documents_every_field() -> None:
    document = tomllib.loads(_DISABLED_SETTING.sub("", EXAMPLE.read_text(encoding="utf-8")))
    assert _undocumented(Settings, document) == []
    assert document["actors"], "the example needs an [actors.<name>] table"


def test_every_key_in_the_example_has_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = [
        line
        for previous, line in zip(["", *lines], lines, strict=False)
        if _KEY_LINE.match(line) and not previous.startswith("# ")
    ]
    assert undocumented == []


# --- errors, one kind at a time -----------------------------------------------------------


def test_unknown_key_suggests_the_close_one(tmp_path: pathlib.Path) -> None:
    problems = _problems(tmp_path, "[http]\nprot = 9000\n[actors.crashy]\nbackof_jitter = 0.1\n")
    assert problems == {
        "http.prot": "unknown key (did you mean http.port?)",
        "actors.crashy.backof_jitter": ("unknown key (did you mean actors.crashy.backoff_jitter?)"),
    }


def test_unknown_section_and_far_off_key(tmp_path: pathlib.Path) -> None:
    problems = _problems(tmp_path, "[htttp]\nport = 1\n[service]\nzzz = 1\n")
    assert problems == {
        "htttp": "unknown key (did you mean http?)",
        "service.zzz": "unknown key",
    }


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ('[http]\nport = "8080"', "http.port", 'must be an integer (got "8080")'),
        ('[http]\nenabled = "yes"', "http.enabled", 'must be true or false (got "yes")'),
        ("[service]\nname = 5", "service.name", "must be a string (got 5)"),
        ("[telegram]\nadmin_chat_ids = [1, 2.5]", "telegram.admin_chat_ids[1]", "must be"),
        (
            "[actors.crashy]\nbudget_max_failures = 2.5",
            "actors.crashy.budget_max_failures",
            "must be an integer (got 2.5)",
        ),
        ("http = 5", "http", "must be a table (got 5)"),
        ("[actors]\ncrashy = 1", "actors.crashy", "must be a table (got 1)"),
        ('[service]\nlog_level = "loud"', "service.log_level", 'must be "debug", "info"'),
    ],
)
def test_wrong_type(tmp_path: pathlib.Path, text: str, path: str, reason: str) -> None:
    problems = _problems(tmp_path, text)
    assert list(problems) == [path]
    assert problems[path].startswith(reason)


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("[alerts]\nthrottle_seconds = -1", "alerts.throttle_seconds", "must be > 0 (got -1)"),
        (
            "[actors.w]\nbackoff_min_seconds = -0.5",
            "actors.w.backoff_min_seconds",
            "must be >= 0 (got -0.5)",
        ),
        (
            "[actors.w]\nshutdown_timeout_seconds = -1",
            "actors.w.shutdown_timeout_seconds",
            "must be >= 0 (got -1)",
        ),
        ("[actors.w]\ninterval_seconds = 0", "actors.w.interval_seconds", "must be > 0 (got 0)"),
        ("[http]\nport = 65536", "http.port", "must be <= 65535 (got 65536)"),
        ("[http]\nport = -1", "http.port", "must be >= 0 (got -1)"),
        ("[actors.w]\nbackoff_jitter = 1.5", "actors.w.backoff_jitter", "must be <= 1 (got 1.5)"),
        ("[actors.w]\nbackoff_jitter = -0.1", "actors.w.backoff_jitter", "must be >= 0 (got -0.1)"),
        (
            "[actors.w]\nbackoff_multiplier = 0.5",
            "actors.w.backoff_multiplier",
            "must be >= 1 (got 0.5)",
        ),
        (
            "[actors.w]\nbudget_max_failures = 0",
            "actors.w.budget_max_failures",
            "must be >= 1 (got 0)",
        ),
        (
            "[actors.w]\npark_cooldown_seconds = 0",
            "actors.w.park_cooldown_seconds",
            "must be > 0 (got 0)",
        ),
        ("[actors.w]\nbudget_window_seconds = inf", "actors.w.budget_window_seconds", "must be a"),
        ('[actors.w]\nrestart = "always"', "actors.w.restart", 'must be "permanent"'),
        ('[actors.w]\non_exhausted = "panic"', "actors.w.on_exhausted", 'must be "park"'),
        ("[alerts]\nqueue_size = 0", "alerts.queue_size", "must be >= 1 (got 0)"),
        ('[alerts.webhook]\nurl = "ftp://x"', "alerts.webhook.url", "must be an http://"),
        ('[telegram]\napi_base = "localhost"', "telegram.api_base", "must be an http://"),
        ('[service]\nname = ""', "service.name", "must not be empty"),
        ('[plugins]\npaths = ["no such/path"]', "plugins.paths[0]", "must be a dotted module"),
    ],
)
def test_impossible_value(tmp_path: pathlib.Path, text: str, path: str, reason: str) -> None:
    problems = _problems(tmp_path, text)
    assert list(problems) == [path]
    assert problems[path].startswith(reason)


def test_backoff_min_above_max(tmp_path: pathlib.Path) -> None:
    text = "[actors.crashy]\nbackoff_min_seconds = 10\nbackoff_max_seconds = 5\n"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.problems == [
        ConfigProblem(
            "actors.crashy.backoff_min_seconds", "must be <= backoff_max_seconds (got 10 > 5)"
        )
    ]
    assert str(caught.value) == (
        "config error: actors.crashy.backoff_min_seconds:"
        " must be <= backoff_max_seconds (got 10 > 5)"
    )
    assert caught.value.format() == str(caught.value)


def test_backoff_min_alone_may_exceed_the_actor_default_max(tmp_path: pathlib.Path) -> None:
    settings = _load(tmp_path, "[actors.slow]\nbackoff_min_seconds = 600\n")
    assert settings.actor_override("slow").backoff_min_seconds == 600


def test_alerts_by_telegram_need_the_bot_token(tmp_path: pathlib.Path) -> None:
    text = "[telegram]\nadmin_chat_ids = [42]\n[alerts.telegram]\nenabled = true\n"
    assert _problems(tmp_path, text) == {
        "telegram.token": "required when alerts.telegram.enabled is true"
    }


def test_alerts_by_telegram_need_a_chat(tmp_path: pathlib.Path) -> None:
    text = f'[telegram]\ntoken = "{TOKEN}"\n[alerts.telegram]\nenabled = true\n'
    problems = _problems(tmp_path, text)
    assert list(problems) == ["alerts.telegram.chat_ids"]
    assert problems["alerts.telegram.chat_ids"].startswith("must not be empty")


def test_alert_chats_fall_back_to_admin_chats(tmp_path: pathlib.Path) -> None:
    text = (
        f'[telegram]\ntoken = "{TOKEN}"\nadmin_chat_ids = [7]\n[alerts.telegram]\nenabled = true\n'
    )
    assert _load(tmp_path, text).alerts.telegram.enabled is True


def test_empty_secret_counts_as_unset(tmp_path: pathlib.Path) -> None:
    text = '[telegram]\ntoken = ""\nadmin_chat_ids = [7]\n[alerts.telegram]\nenabled = true\n'
    assert list(_problems(tmp_path, text)) == ["telegram.token"]


def test_toml_syntax_error_names_line_and_column(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "[http]\nport = = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    [problem] = caught.value.problems
    assert problem.path == str(path)
    assert problem.reason.startswith("invalid TOML: ")
    assert "line 2, column" in problem.reason


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.problems == [ConfigProblem(str(path), "file not found")]


def test_unreadable_file_still_reports_bad_overrides(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nowhere.toml", environ={"VPNBOT_HTTP__PROT": "1"})
    assert [problem.path for problem in caught.value.problems] == [
        str(tmp_path / "nowhere.toml"),
        "VPNBOT_HTTP__PROT",
    ]


def test_every_problem_is_reported_together(tmp_path: pathlib.Path) -> None:
    text = """
[service]
log_level = "verbose"
[http]
prot = 1
[telegram]
admin_chat_ids = [1]
[alerts.telegram]
enabled = true
[actors.crashy]
backoff_min_seconds = 10
backoff_max_seconds = 5
budget_max_failures = 0
"""
    problems = _problems(tmp_path, text, {"VPNBOT_HTTP__PORT": "abc", "VPNBOT_NOPE__X": "1"})
    assert set(problems) == {
        "service.log_level",
        "http.prot",
        "http.port",
        "telegram.token",
        "actors.crashy.budget_max_failures",
        "VPNBOT_NOPE__X",
    }
    # the backoff order is checked once the actor's own fields are valid
    text = text.replace("budget_max_failures = 0", "")
    assert "actors.crashy.backoff_min_seconds" in _problems(tmp_path, text)


def test_config_error_lines_and_pickling() -> None:
    error = ConfigError([ConfigProblem("a.b", "bad"), ConfigProblem("c", "worse")])
    assert str(error) == "config error: a.b: bad\nconfig error: c: worse"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems


# --- environment overrides ----------------------------------------------------------------


def test_environment_wins_over_the_file(tmp_path: pathlib.Path) -> None:
    text = "[http]\nport = 8000\n[actors.crashy]\nbudget_max_failures = 9\n"
    environ = {
        "VPNBOT_HTTP__PORT": "9000",
        "VPNBOT_HTTP__ENABLED": "false",
        "VPNBOT_ACTORS__CRASHY__BUDGET_MAX_FAILURES": "3",
        "VPNBOT_ACTORS__OTHER__BACKOFF_JITTER": "0.5",
        "VPNBOT_TELEGRAM__ADMIN_CHAT_IDS": "[1, 2]",
        "VPNBOT_PLUGINS__SETTINGS__CRYPTOPAY__NETWORK": "testnet",
        "VPNBOT_CONFIG": "/somewhere/else.toml",
        "UNRELATED": "1",
    }
    settings = _load(tmp_path, text, environ)
    assert settings.http.port == 9000
    assert settings.http.enabled is False
    assert settings.actor_override("crashy").budget_max_failures == 3
    assert settings.actor_override("other").backoff_jitter == 0.5
    assert settings.telegram.admin_chat_ids == [1, 2]
    assert settings.plugins.settings == {"cryptopay": {"network": "testnet"}}


def test_string_settings_take_the_text_as_written() -> None:
    environ = {
        "VPNBOT_SERVICE__NAME": "123",
        "VPNBOT_SERVICE__INSTANCE_ID": '"quoted"',
        "VPNBOT_TELEGRAM__TOKEN": TOKEN,
        "VPNBOT_ALERTS__WEBHOOK__SECRET": "true",
    }
    settings = load_settings(None, environ=environ)
    assert settings.service.name == "123"
    assert settings.service.instance_id == "quoted"
    assert settings.secret_values() == [TOKEN, "true"]


@pytest.mark.parametrize(
    ("name", "value", "path", "reason"),
    [
        (
            "VPNBOT_HTTP__PROT",
            "1",
            "VPNBOT_HTTP__PROT",
            "unknown key http.prot (did you mean VPNBOT_HTTP__PORT?)",
        ),
        (
            "VPNBOT_HTTPP__PORT",
            "1",
            "VPNBOT_HTTPP__PORT",
            "unknown section httpp (did you mean VPNBOT_HTTP__PORT?)",
        ),
        ("VPNBOT_DEBUG", "1", "VPNBOT_DEBUG", "unknown section debug;"),
        ("VPNBOT_HTTP__PORT__X", "1", "VPNBOT_HTTP__PORT__X", "unknown key http.port.x"),
        ("VPNBOT_HTTP____PORT", "1", "VPNBOT_HTTP____PORT", "malformed override"),
        (
            "VPNBOT_HTTP__PORT",
            "high",
            "http.port",
            'must be an integer (got "high") [from VPNBOT_HTTP__PORT]',
        ),
        (
            "VPNBOT_ACTORS__CRASHY__BACKOFF_JITTER",
            "2",
            "actors.crashy.backoff_jitter",
            "must be <= 1 (got 2) [from VPNBOT_ACTORS__CRASHY__BACKOFF_JITTER]",
        ),
    ],
)
def test_bad_environment_override(name: str, value: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={name: value})
    [problem] = caught.value.problems
    assert problem.path == path
    assert problem.reason.startswith(reason)


# --- credentials and secrets --------------------------------------------------------------


def _credentials(tmp_path: pathlib.Path, files: dict[str, str]) -> dict[str, str]:
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def test_credential_file_supplies_a_secret(tmp_path: pathlib.Path) -> None:
    environ = _credentials(
        tmp_path,
        {
            "telegram.token": f"{TOKEN}\n",
            "alerts.webhook.secret": "s3cr3t\n\n",
            "plugins.settings.cryptopay.token": "cp-token\n",
            "database-password": "ignored: not one of ours",
        },
    )
    settings = load_settings(None, environ=environ)
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == TOKEN
    assert settings.alerts.webhook.secret is not None
    assert settings.alerts.webhook.secret.get_secret_value() == "s3cr3t\n"
    assert settings.plugins.settings == {"cryptopay": {"token": "cp-token"}}


def test_credential_beats_the_file_and_environment_beats_both(tmp_path: pathlib.Path) -> None:
    environ = _credentials(tmp_path, {"telegram.token": CREDENTIAL_TOKEN})
    text = f'[telegram]\ntoken = "{FILE_TOKEN}"\n'
    token = _load(tmp_path, text, environ).telegram.token
    assert token is not None and token.get_secret_value() == CREDENTIAL_TOKEN
    environ["VPNBOT_TELEGRAM__TOKEN"] = ENV_TOKEN
    token = _load(tmp_path, text, environ).telegram.token
    assert token is not None and token.get_secret_value() == ENV_TOKEN


def test_credential_for_a_non_secret_is_an_error(tmp_path: pathlib.Path) -> None:
    environ = _credentials(tmp_path, {"telegram.tokn": "x", "http.port": "1"})
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ)
    assert [problem.path for problem in caught.value.problems] == [
        "credential http.port",
        "credential telegram.tokn",
    ]


def test_secret_values_lists_every_secret(tmp_path: pathlib.Path) -> None:
    environ = _credentials(tmp_path, {"plugins.settings.panel.login": "admin-login"})
    text = f"""
[telegram]
token = "{TOKEN}"
[alerts.webhook]
url = "https://hooks.example.com/x"
secret = "hook-secret"
[plugins.settings.cryptopay]
api_token = "cp-token"
network = "mainnet"
[plugins.settings.panel]
password = ""
"""
    settings = _load(tmp_path, text, environ)
    assert sorted(settings.secret_values()) == sorted(
        [TOKEN, "hook-secret", "admin-login", "cp-token"]
    )
    assert TOKEN not in repr(settings)
    assert "hook-secret" not in repr(settings)


def test_secrets_are_not_echoed_in_problems(tmp_path: pathlib.Path) -> None:
    text = '[telegram]\ntoken = 987654\n[plugins.settings]\ncryptopay = "hunter2"\n'
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert [problem.path for problem in caught.value.problems] == [
        "telegram.token",
        "plugins.settings.cryptopay",
    ]
    assert "987654" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


# --- the bot token and Telegram on purpose -------------------------------------------------

TOKEN_REFUSED = f"must be a bot token as @BotFather issues it: {BOT_TOKEN_SHAPE}"


@pytest.mark.parametrize(
    "token",
    [
        "hello",
        "123456:ABC-def",
        TOKEN[:-1],
        TOKEN + "x",
        "bot" + TOKEN,
        "abc:" + TOKEN.split(":")[1],
        ":" + TOKEN.split(":")[1],
        " " + TOKEN,
        TOKEN + "\n",
        TOKEN[:-1] + "!",
        TOKEN.replace(":", ";"),
    ],
)
def test_a_token_not_shaped_like_botfathers_is_refused(tmp_path: pathlib.Path, token: str) -> None:
    text = f"[telegram]\ntoken = {json.dumps(token)}\n"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.problems == [ConfigProblem("telegram.token", TOKEN_REFUSED)]
    assert token.strip() not in str(caught.value)


def test_a_bad_token_from_a_credential_file_says_where_it_came_from(
    tmp_path: pathlib.Path,
) -> None:
    environ = _credentials(tmp_path, {"telegram.token": "hello\n"})
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ)
    assert caught.value.problems == [
        ConfigProblem("telegram.token", f"{TOKEN_REFUSED} [from credential telegram.token]")
    ]


@pytest.mark.parametrize("token", [TOKEN, DEFAULT_TOKEN, "7:" + "_-" * 17 + "z"])
def test_tokens_shaped_like_botfathers_and_the_emulators_are_accepted(token: str) -> None:
    settings = load_settings(None, environ={"VPNBOT_TELEGRAM__TOKEN": token})
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == token


def test_telegram_off_on_purpose_takes_no_token_and_no_telegram_alerts(
    tmp_path: pathlib.Path,
) -> None:
    text = f'[telegram]\nenabled = false\ntoken = "{TOKEN}"\n[alerts.telegram]\nenabled = true\n'
    assert _problems(tmp_path, text) == {
        "telegram.token": "must be unset when telegram.enabled is false",
        "alerts.telegram.enabled": "must be false when telegram.enabled is false",
    }
    assert _load(tmp_path, "[telegram]\nenabled = false\n").telegram.token is None


def test_production_needs_a_token_unless_telegram_is_off_on_purpose() -> None:
    [problem] = production_problems(Settings())
    assert problem.path == "telegram.token"
    assert problem.reason.startswith("required: without it this instance runs no bot")
    assert "set telegram.enabled = false" in problem.reason
    with_token = Settings.model_validate({"telegram": {"token": TOKEN}})
    assert production_problems(with_token) == []
    off = Settings.model_validate({"telegram": {"enabled": False}})
    assert production_problems(off) == []


# --- actor overrides ----------------------------------------------------------------------


def test_actor_override_is_empty_when_absent() -> None:
    override = Settings().actor_override("anything")
    assert override == ActorPolicyOverride()
    assert override.model_dump(exclude_none=True) == {}


def test_actor_override_keeps_only_what_was_given(tmp_path: pathlib.Path) -> None:
    text = '[actors.crashy]\nrestart = "transient"\nbackoff_max_seconds = 5\nenabled = false\n'
    override = _load(tmp_path, text).actor_override("crashy")
    assert override.model_dump(exclude_none=True) == {
        "restart": "transient",
        "backoff_max_seconds": 5.0,
        "enabled": False,
    }


def test_the_committed_reference_is_generated_from_the_model() -> None:
    """From the core's model and the built-in plugins' models: a plugin installed where
    the tests run would otherwise change what is expected."""
    from importlib.metadata import EntryPoint

    from runtime.config import reference_markdown
    from runtime.plugin_api import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, load_plugins

    builtins = [EntryPoint(n, v, ENTRY_POINT_GROUP) for n, v in BUILTIN_PLUGINS.items()]
    plugins = load_plugins(Settings(), entry_points=builtins, environ={})
    committed = (EXAMPLE.parent / "REFERENCE.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(plugins), (
        "run: vpnbot config-reference > config/REFERENCE.md"
    )
    assert "| `actors.<name>.budget_max_failures` |" in committed


# --- checked against what it names: plugins, plans, actors ----------------------------------
# `vpnbot run` (build_runtime) and `vpnbot check-config` (check_configuration) assemble the
# runtime the same way; tests/integration/test_process.py runs both commands side by side.

WITH_TOKEN = f'[telegram]\ntoken = "{TOKEN}"\n'
WITHOUT_TELEGRAM = "[telegram]\nenabled = false\n"
CRASHY_PLUGIN = '[plugins]\npaths = ["tests.fixtures.crashing_actor_plugin"]\n'
MARZBAN = """
[plugins.settings.marzban]
base_url = "http://127.0.0.1:9"
username = "admin"
password = "panel-password"
"""
MONTH = """
[plans.month]
title = { en = "1 month" }
duration_days = 30
backend = "marzban"
"""


def _check(
    tmp_path: pathlib.Path, text: str, *, environ: dict[str, str] | None = None
) -> ConfigReport:
    settings = _load(tmp_path, text)
    return check_configuration(settings, environ=environ or {})


def _refused(
    tmp_path: pathlib.Path, text: str, *, environ: dict[str, str] | None = None
) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        _check(tmp_path, text, environ=environ)
    problems = caught.value.problems
    assert len(problems) == len({p.path for p in problems}), problems
    return {problem.path: problem.reason for problem in problems}


def test_plans_and_the_trial_need_loaded_backends_and_providers(tmp_path: pathlib.Path) -> None:
    text = (
        WITH_TOKEN
        + MONTH
        + """
prices = { stars = { XTR = 150 }, cryptobot = { RUB = 19900 } }
[trial]
enabled = true
backend = "xui"
"""
    )
    assert _refused(tmp_path, text) == {
        "plans.month.backend": "no VPN backend 'marzban' is loaded (loaded: none)",
        "plans.month.prices.stars": "no payment provider 'stars' is loaded (loaded: none)",
        "plans.month.prices.cryptobot": (
            "no payment provider 'cryptobot' is loaded (loaded: none)"
        ),
        "trial.backend": "no VPN backend 'xui' is loaded",
    }
    loaded = text + MARZBAN + "[plugins.settings.telegram_payments]\n"
    assert _refused(tmp_path, loaded) == {
        "plans.month.prices.cryptobot": (
            "no payment provider 'cryptobot' is loaded (loaded: stars)"
        ),
        "trial.backend": "no VPN backend 'xui' is loaded",
    }


def test_prices_are_checked_against_what_their_provider_takes(tmp_path: pathlib.Path) -> None:
    text = (
        WITH_TOKEN
        + MARZBAN
        + MONTH
        + """
prices = { stars = { RUB = 100 } }
[plugins.settings.telegram_payments]
"""
    )
    assert _refused(tmp_path, text) == {
        "plans.month.prices.stars.RUB": "the stars provider takes XTR only"
    }


def test_a_production_config_without_a_token_is_refused_with_everything_else(
    tmp_path: pathlib.Path,
) -> None:
    text = (
        MONTH + "prices = { stars = { XTR = 150 } }\n[actors.payment_reconciler]\nenabled = false\n"
    )
    assert set(_refused(tmp_path, text)) == {
        "telegram.token",
        "plans.month.backend",
        "plans.month.prices.stars",
        "actors.payment_reconciler",
    }
    assert _check(tmp_path, WITHOUT_TELEGRAM).warnings == []
    # The sandbox brings its own Telegram: without a file nothing more is required.
    assert check_configuration(Settings(), environ={}, production=False).warnings == []


def test_an_actor_name_that_is_a_typo_is_refused_with_the_likely_one(
    tmp_path: pathlib.Path,
) -> None:
    text = WITHOUT_TELEGRAM + "[actors.reconciliaton]\ninterval_seconds = 60\n"
    assert _refused(tmp_path, text) == {
        "actors.reconciliaton": "no actor has that name (did you mean actors.reconciliation?)"
    }


def test_an_actor_name_like_none_lists_the_actors(tmp_path: pathlib.Path) -> None:
    text = WITHOUT_TELEGRAM + "[actors.payment_reconciler]\nbudget_max_failures = 3\n"
    reason = _refused(tmp_path, text)["actors.payment_reconciler"]
    assert reason == "no actor has that name; the actors are " + ", ".join(
        sorted(BUILTIN_ACTOR_NAMES)
    )


def test_plugin_actors_are_actors_too(tmp_path: pathlib.Path) -> None:
    text = WITHOUT_TELEGRAM + CRASHY_PLUGIN + "[actors.crashy]\nbudget_max_failures = 3\n"
    report = _check(tmp_path, text)
    assert {"crashy", "steady"} <= set(report.actors)
    assert report.warnings == []
    typo = text.replace("[actors.crashy]", "[actors.crashi]")
    assert _refused(tmp_path, typo) == {
        "actors.crashi": "no actor has that name (did you mean actors.crashy?)"
    }


def test_an_actor_this_configuration_does_not_run_is_a_warning(tmp_path: pathlib.Path) -> None:
    text = WITHOUT_TELEGRAM + "[actors.notifier]\ninterval_seconds = 2\n[actors.bot]\n"
    report = _check(tmp_path, text)
    assert report.warnings == [
        ConfigProblem("actors.notifier", "not run with this configuration: has no effect"),
        ConfigProblem("actors.bot", "not run with this configuration: has no effect"),
    ]
    assert "notifier" not in report.actors and "bot" not in report.actors


def test_the_actors_of_a_plugin_left_out_cannot_be_known_so_they_are_a_warning(
    tmp_path: pathlib.Path,
) -> None:
    text = WITHOUT_TELEGRAM + CRASHY_PLUGIN + "[actors.crashy]\nbudget_max_failures = 3\n"
    disabled = {"VPNBOT_DISABLE_PLUGINS": "tests.fixtures.crashing_actor_plugin"}
    report = _check(tmp_path, text, environ=disabled)
    assert [w.path for w in report.warnings] == ["actors.crashy"]
    assert "tests.fixtures.crashing_actor_plugin" in report.warnings[0].reason
    assert "crashy" not in report.actors


def test_overrides_are_checked_against_each_actors_own_defaults(tmp_path: pathlib.Path) -> None:
    text = (
        WITH_TOKEN
        + CRASHY_PLUGIN
        + """
[actors.database]
backoff_max_seconds = 0.5
[actors.bot]
backoff_min_seconds = 120
[actors.crashy]
backoff_min_seconds = 10
"""
    )
    assert _refused(tmp_path, text) == {
        "actors.database.backoff_max_seconds": (
            "must be >= 1, this actor's backoff_min_seconds (got 0.5); set backoff_min_seconds too"
        ),
        "actors.bot.backoff_min_seconds": (
            "must be <= 60, this actor's backoff_max_seconds (got 120); set backoff_max_seconds too"
        ),
        "actors.crashy.backoff_min_seconds": (
            "must be <= 5, this actor's backoff_max_seconds (got 10); set backoff_max_seconds too"
        ),
    }
    # A disabled actor's policy is never applied, so it cannot clash.
    bot_off = text.replace("[actors.bot]", "[actors.bot]\nenabled = false")
    assert set(_refused(tmp_path, bot_off)) == {
        "actors.database.backoff_max_seconds",
        "actors.crashy.backoff_min_seconds",
    }


@pytest.mark.parametrize(
    "text",
    [
        WITH_TOKEN,
        WITH_TOKEN
        + '[bot]\nmode = "webhook"\nwebhook_url = "https://bot.example.com/hook"\n'
        + 'webhook_secret = "hook-secret"\n',
        WITHOUT_TELEGRAM
        + CRASHY_PLUGIN
        + "[http]\nenabled = false\n[actors.fast_expiry_cleanup]\nenabled = false\n",
    ],
    ids=["polling", "webhook", "without-telegram"],
)
def test_the_check_finds_the_actors_run_would_start(tmp_path: pathlib.Path, text: str) -> None:
    """The check declares the bot's actors instead of building the bot: the same names and
    policies must come out as from the runtime `vpnbot run` builds."""
    settings = _load(tmp_path, text)
    report = check_configuration(settings, environ={})
    runtime = build_runtime(settings, environ={})
    specs = runtime.supervisor.specs
    assert report.actors == [spec.name for spec in specs]
    plugin_actors = {spec.name for spec in runtime.plugins.actors()}
    assert set(report.actors) <= set(BUILTIN_ACTOR_NAMES) | plugin_actors
    built = {spec.name: spec for spec in specs}
    for spec in declared_bot_actors(settings):
        assert dataclasses.replace(spec, run=built[spec.name].run) == built[spec.name]


def test_checking_a_configuration_imports_no_aiogram(tmp_path: pathlib.Path) -> None:
    config = _write(tmp_path, WITH_TOKEN + "[actors.bot]\nbackoff_min_seconds = 120\n")
    code = (
        "import sys, supervisor\n"
        f"code = supervisor.main(['check-config', {str(config)!r}], environ={{}})\n"
        "assert code == 78, code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiogram'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "actors.bot.backoff_min_seconds" in result.stderr


_ACTOR_MENTION = re.compile(r"\bactors\.([A-Za-z0-9_<>-]+)|VPNBOT_ACTORS__([A-Z0-9_]+?)__")


def test_every_actor_the_docs_name_exists() -> None:
    """Except in a refusal they quote: that one is a typo on purpose."""
    documents = [
        ROOT / "README.md",
        ROOT / "config" / "README.md",
        ROOT / "config" / "vpnbot.example.toml",
        ROOT / "systemd" / "README.md",
        ROOT / "plugins" / "README.md",
        ROOT / "bench" / "README.md",
    ]
    named = {
        (document.relative_to(ROOT).as_posix(), (file_name or env_name).lower())
        for document in documents
        for line in document.read_text(encoding="utf-8").splitlines()
        if "no actor has that name" not in line
        for file_name, env_name in _ACTOR_MENTION.findall(line)
    }
    assert named, "the docs name no actor at all: the pattern is wrong"
    unknown = {(doc, name) for doc, name in named if name not in (*BUILTIN_ACTOR_NAMES, "<name>")}
    assert unknown == set()


def test_vpnbot_plugins_lists_what_loads_and_refuses_a_plugins_bad_settings(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import supervisor as cli

    # Plans naming nothing loaded do not hide what did load: that is what to look at.
    config = _write(tmp_path, CRASHY_PLUGIN + MONTH + "prices = { stars = { XTR = 1 } }\n")
    assert cli.main(["plugins", "--config", str(config)], environ={}) == 0
    listing = capsys.readouterr().out
    assert "tests.fixtures.crashing_actor_plugin" in listing
    assert "steady (on), crashy (on)" in listing

    config.write_text(WITH_TOKEN + "[plugins.settings.marzban]\nbase_url = 1\n")
    assert cli.main(["plugins", "--config", str(config)], environ={}) == 78
    assert "config error: plugins.settings.marzban.base_url" in capsys.readouterr().err


def test_broadcasts_section_is_bounded_and_named_in_errors(tmp_path: pathlib.Path) -> None:
    assert _load(tmp_path, "[broadcasts]\nmax_buttons = 3\nlisted = 5\n").broadcasts.listed == 5
    problems = _problems(tmp_path, "[broadcasts]\nmax_buttons = 21\nlisted = 0\nbuttons = 1\n")
    assert set(problems) == {"broadcasts.max_buttons", "broadcasts.listed", "broadcasts.buttons"}
