"""The operator's reference of every key: names, types and defaults from the models.

Each key's words have one source. The core's are the comments of the documented example
file, which an operator reads first and which must show every key anyway. A plugin's are
its settings model's field descriptions (``Field(description=...)``, or else the docstring
written under each field, read from the model's source: ``_attribute_docs``): the model
is the only place a plugin's keys are all written, in the plugin's own package, where a
third-party author keeps them. A plugin declares its model in ``vpnbot_offers``
(``Offer.settings_model``). A test keeps the committed copy in step.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

from ._attribute_docs import attribute_docstrings
from ._model import ActorPolicyOverride, PlanSettings, PromoCodeSettings, Settings, _looks_secret

if TYPE_CHECKING:
    from runtime.plugin_api import LoadedPlugins, SettingsTable

_KEY = re.compile(r"^#?([A-Za-z0-9_]+) = ")
_TABLE = re.compile(r"^#?\[([^\]]+)\]")
_RST_LITERAL = re.compile(r"``(.+?)``")


def _example_text() -> str:
    packaged = resources.files("runtime.config").joinpath("vpnbot.example.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "config" / "vpnbot.example.toml").read_text(
        encoding="utf-8"
    )


def _descriptions(text: str) -> dict[str, str]:
    """``section.key`` -> the comment block right above the key in the example."""
    found: dict[str, str] = {}
    table = ""
    comment: list[str] = []
    for line in text.splitlines():
        if line.startswith("# "):
            comment.append(line[2:])
            continue
        if table_match := _TABLE.match(line):
            table = re.sub(r"^actors\.[^.]+", "actors.<name>", table_match[1])
            table = re.sub(r"^plans\.[^.]+", "plans.<id>", table)
            table = re.sub(r"^promo\.codes\.[^.]+", "promo.codes.<CODE>", table)
        elif key_match := _KEY.match(line):
            found[f"{table}.{key_match[1]}" if table else key_match[1]] = " ".join(comment)
        comment = []
    return found


def _optional_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested table, written ``Model`` or ``Model | None``."""
    candidates = [annotation]
    if get_origin(annotation) in (Union, UnionType):
        candidates = [a for a in get_args(annotation) if a is not type(None)]
    found = candidates[0] if len(candidates) == 1 else None
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _is_secret_type(annotation: Any) -> bool:
    return annotation in (SecretStr, SecretBytes) or any(
        _is_secret_type(arg) for arg in get_args(annotation)
    )


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    args = [a for a in get_args(annotation) if a is not type(None)]
    name = getattr(origin, "__name__", str(origin))
    if name in ("Annotated",):
        return _type_name(args[0])
    if name in ("Union", "UnionType"):
        return " or ".join(_type_name(a) for a in args) + " (optional)"
    if name == "Literal":
        return " or ".join(f'"{a}"' for a in get_args(annotation))
    return f"{name}[{', '.join(_type_name(a) for a in args)}]"


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "-"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | dict) and value:
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass(frozen=True, slots=True)
class _Row:
    path: str
    kind: str
    default: str
    secret: bool
    description: str


def _rows(model: type[BaseModel], prefix: str) -> list[_Row]:
    rows = []
    docstrings = attribute_docstrings(model)
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, path))
            continue
        if path == "actors":
            rows.extend(_rows(ActorPolicyOverride, "actors.<name>"))
            continue
        if path == "plans":
            rows.extend(_rows(PlanSettings, "plans.<id>"))
            continue
        if path == "promo.codes":
            rows.extend(_rows(PromoCodeSettings, "promo.codes.<CODE>"))
            continue
        secret = _is_secret_type(annotation) or _looks_secret(name)
        description = info.description or docstrings.get(name, "")
        nested = _optional_model(annotation)
        if nested is not None:
            rows.append(_Row(path, "table (optional)", _default(info), secret, description))
            rows.extend(_rows(nested, path))
            continue
        rows.append(_Row(path, _type_name(annotation), _default(info), secret, description))
    return rows


def _prose(text: str) -> str:
    """One markdown table cell from a docstring: one line, literals in backticks."""
    return _RST_LITERAL.sub(r"`\1`", " ".join(text.split())).replace("|", "\\|")


def _model_intro(model: type[BaseModel]) -> str:
    """The model's docstring up to its first example block (``::``), as one paragraph."""
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""
    kept = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        if paragraph.rstrip().endswith("::"):
            break
        kept.append(paragraph)
    return _prose(" ".join(kept))


def _plugin_section(table: SettingsTable) -> list[str]:
    model = table.model
    intro = f"Plugin `{table.plugin}`, model `{model.__module__}.{model.__qualname__}`."
    if words := _model_intro(model):
        intro = f"{intro} {words}"
    lines = [
        "",
        f"### `[{table.table}]`",
        "",
        intro,
        "",
        "| key | type | default | secret | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in _rows(model, table.table):
        secret = "yes" if row.secret else ""
        lines.append(
            f"| `{row.path}` | {row.kind} | {row.default} | {secret} | {_prose(row.description)} |"
        )
    return lines


def _installed_plugins() -> LoadedPlugins:
    """The installed plugins (but those ``VPNBOT_DISABLE_PLUGINS`` names), loaded without a
    config file, as ``vpnbot config-reference`` documents them. Their problems are written
    into the reference; a caller printing it configures logging away from stdout first.
    """
    from runtime.plugin_api import load_plugins

    return load_plugins(Settings())


def reference_markdown(plugins: LoadedPlugins | None = None) -> str:
    """The reference: the core's keys, then one section per table a loaded plugin declares
    a model for (by default the installed plugins, as loaded without a config file)."""
    from runtime.plugin_api import settings_tables

    loaded = _installed_plugins() if plugins is None else plugins
    tables, problems = settings_tables((info.name, info.offers or []) for info in loaded.plugins)
    problems = [f"{p.name}: {p.stage}: {p.error}" for p in loaded.problems] + problems

    words = _descriptions(_example_text())
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config model and the plugins' settings models",
        "(`vpnbot config-reference`); do not edit by hand. Every key can also be set with",
        "`VPNBOT_<SECTION>__<KEY>` and secrets with files in `$CREDENTIALS_DIRECTORY`",
        "(see `config/README.md`).",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for row in _rows(Settings, ""):
        meaning = words.get(row.path, "").replace("|", "\\|")
        lines.append(f"| `{row.path}` | {row.kind} | {row.default} | {meaning} |")
    lines += [
        "",
        "## Plugin settings",
        "",
        "Each plugin reads its own table, `[plugins.settings.<plugin>]`, validated at start",
        "and by `vpnbot check-config`. Any of its keys can come from a credential file named",
        "by the key path; those marked secret never reach a log line.",
    ]
    for table in tables:
        lines.extend(_plugin_section(table))
    if problems:
        lines += ["", "Not documented, because the plugin or its model could not be loaded:", ""]
        lines += [f"- {_prose(problem)}" for problem in problems]
    return "\n".join(lines) + "\n"
