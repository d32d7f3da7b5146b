"""Two configurations compared key by key, and one made from parts of both (a reload)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._load import _Loader
from ._model import ConfigError, Settings

_ABSENT = object()


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The dotted paths whose values differ, in order; a table added or removed is named
    by each of its keys. Values are never part of the answer (secrets are among them)."""
    return sorted(_differences(old.model_dump(), new.model_dump(), ""))


def _differences(old: Any, new: Any, path: str) -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            below = f"{path}.{key}" if path else str(key)
            yield from _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), below)
    elif isinstance(old, dict) and new is _ABSENT:
        yield from _differences(old, {}, path)
    elif old is _ABSENT and isinstance(new, dict):
        yield from _differences({}, new, path)
    elif old != new and {id(old), id(new)} != {id(_ABSENT), id(None)}:
        yield path


def with_kept(new: Settings, old: Settings, paths: Iterable[str]) -> Settings:
    """``new`` with the values ``old`` has at ``paths`` (keys that must wait for a restart),
    validated again as a whole; ``ConfigError`` when the mix is not a valid configuration."""
    document = new.model_dump()
    kept = old.model_dump()
    for path in paths:
        _put(document, kept, path.split("."))
    loader = _Loader()
    mixed = loader.validate(document)
    if mixed is None or loader.problems:
        raise ConfigError(loader.problems)
    mixed._credential_values = new._credential_values
    return mixed


def _put(document: dict[str, Any], kept: Any, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    old = kept.get(head, _ABSENT) if isinstance(kept, dict) else _ABSENT
    if rest and isinstance(document.get(head), dict) and isinstance(old, dict):
        _put(document[head], old, rest)
    elif old is _ABSENT:
        document.pop(head, None)
    else:
        document[head] = old


def is_under(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or a key inside one."""
    return any(path == prefix or path.startswith(prefix + ".") for prefix in prefixes)
