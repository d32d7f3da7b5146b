"""The operator's reference of every key: names, types and defaults from the model, the
words from the documented example file. A test keeps the committed copy in step."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ._model import ActorPolicyOverride, PlanSettings, PromoCodeSettings, Settings

_KEY = re.compile(r"^#?([A-Za-z0-9_]+) = ")
_TABLE = re.compile(r"^#?\[([^\]]+)\]")


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
    return str(value)


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows = []
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
        rows.append((path, _type_name(annotation), _default(info)))
    return rows


def reference_markdown() -> str:
    words = _descriptions(_example_text())
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config model (`vpnbot config-reference`); do not edit by hand.",
        "Every key can also be set with `VPNBOT_<SECTION>__<KEY>` and secrets with files in",
        "`$CREDENTIALS_DIRECTORY` (see `config/README.md`).",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for path, kind, default in _rows(Settings, ""):
        meaning = words.get(path, "").replace("|", "\\|")
        lines.append(f"| `{path}` | {kind} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"
