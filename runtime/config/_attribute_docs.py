"""The docstrings written under a model's fields, read from its source for the reference.

pydantic's ``use_attribute_docstrings`` reads the same words, but as each model class is
created: before Python 3.13 it walks the frames of the import under way and has
``inspect`` find each frame's module, which checks the file of every module imported so
far. The built-in plugins' settings models cost ``vpnbot run`` 0.14 s of CPU that way (four
starts each, interleaved: 3.10 s against 3.24 s until ready), for words that only
``vpnbot config-reference`` shows. So the reference reads them here, once per source file,
and a model needs no flag for its docstrings to be its keys' words.

As pydantic does, a string right after an annotated assignment to a name is that name's
docstring (``inspect.cleandoc``).
"""

from __future__ import annotations

import ast
import inspect
from functools import cache
from itertools import pairwise
from pathlib import Path

from pydantic import BaseModel


def _docstrings_of(body: list[ast.stmt]) -> dict[str, str]:
    found: dict[str, str] = {}
    for before, after in pairwise(body):
        if (
            isinstance(before, ast.AnnAssign)
            and isinstance(before.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found.setdefault(before.target.id, inspect.cleandoc(after.value.value))
    return found


@cache
def _classes_of(path: str) -> dict[str, dict[str, str]]:
    """``qualname -> {field: docstring}`` for every class a source file defines."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                qualname = f"{prefix}{node.name}"
                found.setdefault(qualname, _docstrings_of(node.body))
                visit(node.body, f"{qualname}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, f"{prefix}{node.name}.<locals>.")

    visit(tree.body, "")
    return found


def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """``field -> docstring`` of ``model``, its own words before its bases'."""
    words: dict[str, str] = {}
    for cls in model.__mro__:
        if not issubclass(cls, BaseModel) or cls is BaseModel:
            continue
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:
            continue
        if path is None:
            continue
        for name, text in _classes_of(path).get(cls.__qualname__, {}).items():
            words.setdefault(name, text)
    return words
