"""The Bot API answers the bot parses: each answer's model is kept once first used.

aiogram parses every answer as ``Response[<the method's result type>]``, a parametrized
pydantic model. pydantic keeps those in a weak cache, so once nothing else holds one the
garbage collector takes it and the next call builds it again: the schema is rebuilt about
once every twenty calls under load (measured: 79 rebuilds in 1,539 calls, the largest
single CPU cost of answering an update after the handler itself). Holding each here keeps
it built.

Each is held from the first call of its method, not built ahead at the start: an idle
service holds only the models of the methods it has called (``Response[Message]`` holds a
validator of the whole ``Message``, about 50 KB), a busy one those it keeps using.
"""

from __future__ import annotations

from typing import Any

from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response

_KEPT: dict[type[TelegramMethod[Any]], type[Any]] = {}


def keep_response_model(method: TelegramMethod[Any]) -> None:
    """Hold the model ``method``'s answer is parsed with, for the process's life."""
    kind = type(method)
    if kind not in _KEPT:
        _KEPT[kind] = Response[method.__returning__]  # type: ignore[name-defined]


def kept_response_models() -> dict[type[TelegramMethod[Any]], type[Any]]:
    """The models held so far, by method."""
    return dict(_KEPT)
