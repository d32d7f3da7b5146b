"""Reading the settings: TOML file, then credential files, then environment overrides.

Everything wrong is collected into one ``ConfigError`` with a dotted key path per problem,
so an operator fixes the whole file in one go.
"""

from __future__ import annotations

import difflib
import json
import os
import pathlib
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from ._model import (
    AlertsSettings,
    ConfigError,
    ConfigProblem,
    CrossFieldError,
    Settings,
    TelegramSettings,
    cross_section_problems,
)

ENV_PREFIX = "VPNBOT_"
ENV_SEPARATOR = "__"
NOT_OVERRIDES = frozenset({"VPNBOT_CONFIG", "VPNBOT_DISABLE_PLUGINS"})
"""Variables that share the prefix but are not setting overrides (the CLI reads them)."""
CREDENTIALS_VARIABLE = "CREDENTIALS_DIRECTORY"

Loc = tuple[str | int, ...]


def load_settings(
    path: pathlib.Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge and validate the configuration, or raise ``ConfigError`` listing every problem.

    Sources, later ones winning: the TOML file at ``path`` (embedded defaults when ``None``),
    secrets from files in ``$CREDENTIALS_DIRECTORY``, then ``VPNBOT_<SECTION>__<KEY>``
    environment variables. ``environ`` defaults to ``os.environ``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    loader = _Loader()
    raw: dict[str, Any] | None = {} if path is None else loader.read_file(path)
    document = {} if raw is None else raw
    loader.apply_credentials(document, env)
    loader.apply_environment(document, env)
    if raw is None:
        # The file could not be read: validating the rest would only report false problems.
        raise ConfigError(loader.problems)
    settings = loader.validate(document)
    if loader.problems or settings is None:
        raise ConfigError(loader.problems)
    settings._credential_values = tuple(loader.credential_values)
    return settings


@dataclass
class _Loader:
    problems: list[ConfigProblem] = field(default_factory=list)
    sources: dict[Loc, str] = field(default_factory=dict)
    """Where a value other than the file came from, to say so in problems."""
    credential_values: list[str] = field(default_factory=list)

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(ConfigProblem(path, reason))

    # --- the file -------------------------------------------------------------------------

    def read_file(self, path: pathlib.Path) -> dict[str, Any] | None:
        name = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.problem(name, "file not found")
            return None
        except IsADirectoryError:
            self.problem(name, "is a directory, not a file")
            return None
        except OSError as exc:
            self.problem(name, f"cannot read file: {exc.strerror or exc}")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem(name, f"not valid UTF-8 (at byte {exc.start})")
            return None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.problem(name, f"invalid TOML: {exc}")
            return None

    # --- credential files -----------------------------------------------------------------

    def apply_credentials(self, document: dict[str, Any], env: Mapping[str, str]) -> None:
        directory = env.get(CREDENTIALS_VARIABLE)
        if not directory:
            return
        root = pathlib.Path(directory)
        try:
            entries = sorted(entry for entry in root.iterdir() if entry.is_file())
        except OSError as exc:
            self.problem(CREDENTIALS_VARIABLE, f"cannot list directory: {exc.strerror or exc}")
            return
        secrets = _secret_paths()
        sections = set(Settings.model_fields)
        for entry in entries:
            parts = tuple(entry.name.split("."))
            if len(parts) < 2 or parts[0] not in sections:
                continue  # another credential of the unit, not one of ours
            label = f"credential {entry.name}"
            is_plugin_setting = len(parts) == 4 and parts[:2] == ("plugins", "settings")
            if parts not in secrets and not is_plugin_setting:
                known = [".".join(secret) for secret in sorted(secrets)]
                known.append("plugins.settings.<plugin>.<key>")
                self.problem(
                    label,
                    "not a secret setting; credential files can supply " + ", ".join(known),
                )
                continue
            try:
                value = entry.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.problem(label, f"cannot read: {exc}")
                continue
            if value.endswith("\n"):
                value = value[:-1].removesuffix("\r")
            if is_plugin_setting:
                self.credential_values.append(value)
            if self.put(document, parts, value, label):
                self.sources[parts] = label

    # --- environment overrides ------------------------------------------------------------

    def apply_environment(self, document: dict[str, Any], env: Mapping[str, str]) -> None:
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX) or name in NOT_OVERRIDES:
                continue
            parts = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_SEPARATOR))
            if not all(parts):
                self.problem(name, "malformed override; expected VPNBOT_<SECTION>__<KEY>")
                continue
            found = _lookup(parts)
            if found.unknown_at is not None:
                where = _dotted(parts[: found.unknown_at + 1])
                if found.choices is None:
                    parent = _dotted(parts[: found.unknown_at])
                    self.problem(name, f"unknown key {where} ({parent} is not a table)")
                    continue
                reason = f"unknown {'section' if found.unknown_at == 0 else 'key'} {where}"
                match = suggest(parts[found.unknown_at], found.choices)
                if match is not None:
                    fixed = (*parts[: found.unknown_at], match, *parts[found.unknown_at + 1 :])
                    reason += f" (did you mean {_env_name(fixed)}?)"
                elif found.unknown_at == 0:
                    reason += "; overrides are named VPNBOT_<SECTION>__<KEY>"
                self.problem(name, reason)
                continue
            value = _parse_env_value(env[name], string_wanted=_wants_string(found.annotation))
            if self.put(document, parts, value, name):
                self.sources[parts] = name

    def put(self, document: dict[str, Any], parts: Sequence[str], value: Any, label: str) -> bool:
        table = document
        for depth, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                where = _dotted(parts[: depth + 1])
                self.problem(label, f"cannot set {_dotted(parts)}: {where} is not a table")
                return False
            table = child
        table[parts[-1]] = value
        return True

    # --- validation -----------------------------------------------------------------------

    def validate(self, document: dict[str, Any]) -> Settings | None:
        try:
            return Settings.model_validate(document)
        except ValidationError as exc:
            errors = exc.errors()
        for error in errors:
            self.problems.extend(self.convert(error))
        if not any(error["loc"] == () for error in errors):
            # The cross-section checks did not run (they need every section valid): run them
            # on their own, so a missing secret is reported together with a typo elsewhere.
            for path, reason in _cross_section_problems_of(document):
                loc = tuple(path.split("."))
                self.problems.append(ConfigProblem(path, self.note(loc, reason)))
        return None

    def convert(self, error: ErrorDetails) -> list[ConfigProblem]:
        loc: Loc = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, CrossFieldError):
            problems = []
            for sub, reason in cause.problems:
                full = (*loc, *sub.split("."))
                problems.append(ConfigProblem(_dotted(full), self.note(full, reason)))
            return problems
        reason = _reason(error)
        if error["type"] == "extra_forbidden":
            match = suggest(str(loc[-1]), _keys_at(loc[:-1]))
            if match is not None:
                reason += f" (did you mean {_dotted((*loc[:-1], match))}?)"
        elif error["type"] != "missing" and not _is_secret(loc):
            reason += f" (got {_show(error['input'])})"
        return [ConfigProblem(_dotted(loc), self.note(loc, reason))]

    def note(self, loc: Loc, reason: str) -> str:
        for length in range(len(loc), 0, -1):
            source = self.sources.get(loc[:length])
            if source is not None:
                return f"{reason} [from {source}]"
        return reason


def _cross_section_problems_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        telegram = TelegramSettings.model_validate(document.get("telegram", {}))
        alerts = AlertsSettings.model_validate(document.get("alerts", {}))
    except ValidationError:
        return []  # already reported
    return cross_section_problems(telegram, alerts)


# --- the schema, walked by key path -------------------------------------------------------


@dataclass(frozen=True)
class _Lookup:
    annotation: Any = None
    """The type found at the end of the path (``Any`` inside free-form tables)."""
    unknown_at: int | None = None
    """Index of the first part that names nothing."""
    choices: list[str] | None = None
    """The keys allowed where ``unknown_at`` points; ``None`` when that place is no table."""


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``... | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _lookup(parts: Sequence[str | int]) -> _Lookup:
    annotation: Any = Settings
    for index, part in enumerate(parts):
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if annotation is Any:
            return _Lookup(annotation=Any)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
            if part not in fields:
                return _Lookup(unknown_at=index, choices=list(fields))
            annotation = fields[str(part)].annotation
        elif origin is dict:
            annotation = get_args(annotation)[1]
        elif origin is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
        else:
            return _Lookup(unknown_at=index)
    return _Lookup(annotation=_unwrap(annotation))


def _keys_at(loc: Sequence[str | int]) -> list[str]:
    """The keys the table at ``loc`` may hold; empty when it is free-form or not a table."""
    annotation = _lookup(loc).annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _secret_paths(annotation: Any = Settings, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Key paths of every ``SecretStr`` field (not inside ``[actors]`` or free-form tables)."""
    annotation = _unwrap(annotation)
    if annotation is SecretStr:
        return {prefix}
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return set()
    found: set[tuple[str, ...]] = set()
    for name, info in annotation.model_fields.items():
        found |= _secret_paths(info.annotation, (*prefix, name))
    return found


def _is_secret(loc: Loc) -> bool:
    if loc[:2] == ("plugins", "settings"):
        return True  # free-form: may hold API keys
    return _lookup(loc).annotation is SecretStr


def _wants_string(annotation: Any) -> bool:
    if annotation in (str, SecretStr):
        return True
    if get_origin(annotation) is Literal:
        return all(isinstance(arg, str) for arg in get_args(annotation))
    return False


def _parse_env_value(text: str, *, string_wanted: bool) -> Any:
    """A TOML value when the text is one (``9000``, ``true``, ``[1, 2]``), else the text.

    For string settings only a quoted TOML string is unquoted; ``123`` stays ``"123"``.
    """
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    if list(parsed) != ["value"]:
        return text
    value = parsed["value"]
    if string_wanted and not isinstance(value, str):
        return text
    return value


# --- wording ------------------------------------------------------------------------------

_REASONS = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "list_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind in _REASONS:
        return _REASONS[kind]
    if kind in _BOUNDS:
        key, symbol = _BOUNDS[kind]
        return f"must be {symbol} {_show(ctx[key])}"
    if kind == "literal_error":
        return "must be " + str(ctx["expected"]).replace("'", '"')
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            text += f".{key}" if text else key
    return text


def _env_name(parts: Sequence[str]) -> str:
    return ENV_PREFIX + ENV_SEPARATOR.join(parts).upper()


def suggest(word: str, choices: Sequence[str]) -> str | None:
    """The choice closest to ``word`` (a likely typo), or None when none is close."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


M = TypeVar("M", bound=BaseModel)


def validate_section(model: type[M], data: Mapping[str, Any], *, path: str) -> M:
    """Validate a free-form table (a plugin's settings) against ``model``.

    Problems are reported like the core's, at ``<path>.<key>``, with the same reasons and
    without echoing values (plugin settings often hold API keys).
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [part for part in error["loc"] if isinstance(part, str | int)]
            if error["type"] == "extra_forbidden":
                reason = "unknown key"
                suggestion = suggest(str(loc[-1]), list(model.model_fields)) if loc else None
                if suggestion:
                    reason += f" (did you mean {suggestion!r}?)"
            else:
                reason = _reason(error)
            problems.append(ConfigProblem(_dotted([*path.split("."), *loc]), reason))
        raise ConfigError(problems) from None
