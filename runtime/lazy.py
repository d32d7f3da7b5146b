"""Names a package exports but imports only when first used (PEP 562).

A package that keeps a light import (commands that do not run the bot, plugins that are
not configured) lists what it exports and where each name lives; the module is imported
on the first access and the name then kept in the package like any other::

    __getattr__ = lazy_exports(__name__, {"MarzbanBackend": ".backend"})

Only the standard library here: the lightest imports depend on this module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each name to the module
    (relative to ``package``) that defines it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
