"""Cheaper dispatch through aiogram, the same routing.

- aiogram runs a filter or handler that is a plain function (every magic filter, ``F.x``)
  through ``asyncio.to_thread``: a hand-over to a worker thread and back for each check,
  several per update. ``await_plain_callables`` makes them coroutines that call the plain
  function inline (magic filters only read the event). It also gives each observer a
  middleware chain built without ``functools.wraps`` (aiogram builds one per event and
  observer, and copying the handler's metadata onto it was most of that cost).
- ``JsonBodySession`` sends each Bot API request as a JSON body instead of aiogram's
  url-encoded form (which prepares every field, dumps nested objects to JSON and then
  percent-quotes them); a request that uploads a file still goes as a form. A keyboard
  marked with ``kept`` (built once and never changed, such as the main menu) is dumped
  and prepared once, not on every request that carries it; when the answer echoes it
  exactly as sent, the kept markup stands in for the echo instead of parsing its buttons
  again. It verifies TLS with the process's one client context (``shared_tls_context``):
  aiogram builds a context of its own for each session, another copy of the whole CA
  bundle in memory. It holds the model each method's answer is parsed with from the
  method's first call (``_responses``), which pydantic would otherwise build again.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, TypeVar, cast

from aiogram import Bot, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.dispatcher.event.bases import MiddlewareType, NextMiddlewareType
from aiogram.dispatcher.event.handler import CallableObject, CallbackType
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject
from aiohttp import ClientError, ClientSession, TCPConnector
from pydantic import ValidationError

from runtime.plugin_api.peer import shared_tls_context

from ._responses import keep_response_model

_JSON_HEADERS = {"Content-Type": "application/json"}
_KEPT_MAX = 256
_kept: dict[int, tuple[object, dict[str, Any] | None]] = {}
"""By ``id``: a kept markup (held, so its id stays its own) and its prepared form."""

M = TypeVar("M")


def kept(markup: M) -> M:
    """Mark ``markup`` as never changed from now on: requests carrying it reuse the form
    it was first sent in. Returns it."""
    if len(_kept) >= _KEPT_MAX:
        _kept.clear()
    _kept[id(markup)] = (markup, None)
    return markup


def _inline(callable_object: CallableObject) -> None:
    if callable_object.awaitable:
        return
    plain: Callable[..., Any] = callable_object.callback

    async def inline(*args: Any, **kwargs: Any) -> Any:
        return plain(*args, **kwargs)

    callable_object.callback = inline
    callable_object.awaitable = True


def _wrap_middlewares(
    middlewares: Sequence[MiddlewareType[TelegramObject]], handler: CallbackType
) -> NextMiddlewareType[TelegramObject]:
    """aiogram's ``MiddlewareManager.wrap_middlewares`` without ``functools.wraps``."""

    def handler_wrapper(event: TelegramObject, kwargs: dict[str, Any]) -> Any:
        return handler(event, **kwargs)

    middleware: NextMiddlewareType[TelegramObject] = handler_wrapper
    for m in reversed(middlewares):
        middleware = functools.partial(m, middleware)
    return middleware


def await_plain_callables(router: Router) -> int:
    """Make every plain-function filter and handler of ``router`` and the routers inside it
    run inline; returns how many were changed."""
    changed = 0
    for each in router.chain_tail:
        for observer in each.observers.values():
            for manager in (observer.middleware, observer.outer_middleware):
                manager.wrap_middlewares = _wrap_middlewares  # type: ignore[method-assign,assignment]
            for handler in [observer._handler, *observer.handlers]:
                for item in [handler, *(handler.filters or ())]:
                    if not item.awaitable:
                        _inline(item)
                        changed += 1
    return changed


class JsonBodySession(AiohttpSession):
    """An ``AiohttpSession`` whose requests carry JSON bodies (see the module docstring)."""

    def __init__(self, *, limit: int = 100, **kwargs: Any) -> None:
        """``AiohttpSession.__init__`` (no proxy) with the process's one TLS context: aiogram's
        builds a context of its own, loading the whole CA bundle (about 20 ms of CPU), only
        for it to be replaced here. A test holds the attributes to aiogram's."""
        BaseSession.__init__(self, **kwargs)
        self._session: ClientSession | None = None
        self._connector_type: type[TCPConnector] = TCPConnector
        self._connector_init: dict[str, Any] = {
            "ssl": shared_tls_context(),
            "limit": limit,
            "ttl_dns_cache": 3600,
        }
        self._should_reset_connector = True
        self._proxy = None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's
    ) -> TelegramType:
        keep_response_model(method)
        files: dict[str, Any] = {}
        body: dict[str, Any] = {}
        markup = getattr(method, "reply_markup", None)
        held = _kept.get(id(markup)) if markup is not None else None
        if held is not None and held[0] is markup:
            prepared_markup = held[1]
            if prepared_markup is None:
                prepared_markup = self.prepare_value(
                    cast(Any, markup).model_dump(warnings=False),
                    bot=bot,
                    files=files,
                    _dumps_json=False,
                )
                _kept[id(markup)] = (markup, prepared_markup)
            body["reply_markup"] = prepared_markup
            dumped = method.model_dump(warnings=False, exclude={"reply_markup"})
        else:
            dumped = method.model_dump(warnings=False)
        for key, value in dumped.items():
            prepared = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
            if prepared is None or prepared == "":
                continue
            if isinstance(value, datetime.datetime | datetime.timedelta):
                prepared = int(prepared)
            body[key] = prepared
        if files:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url,
                data=self.json_dumps(body),
                headers=_JSON_HEADERS,
                timeout=self.timeout if timeout is None else timeout,  # type: ignore[arg-type]
            ) as resp:
                raw_result = await resp.text()
        except TimeoutError as e:
            raise TelegramNetworkError(method=method, message="Request timeout error") from e
        except ClientError as e:
            raise TelegramNetworkError(method=method, message=f"{type(e).__name__}: {e}") from e
        if held is not None:
            echoed = self._result_echoing(bot, method, resp.status, raw_result, markup, body)
            if echoed is not None:
                return echoed
        response = self.check_response(
            bot=bot, method=method, status_code=resp.status, content=raw_result
        )
        return cast(TelegramType, response.result)

    def _result_echoing(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status: int,
        content: str,
        markup: object,
        body: dict[str, Any],
    ) -> TelegramType | None:
        """The result of a request that carried a kept markup, when it echoes that markup
        exactly as sent (a sent or edited message comes back with its keyboard): the kept
        markup stands in for the echo, whose buttons, most of the result's models, are not
        parsed again. None when it does not: the answer is then parsed as usual."""
        if status != HTTPStatus.OK:
            return None
        try:
            data = self.json_loads(content)
        except ValueError:
            return None
        result = data.get("result") if isinstance(data, dict) and data.get("ok") is True else None
        if not isinstance(result, dict) or result.get("reply_markup") != body["reply_markup"]:
            return None
        result["reply_markup"] = markup  # a model instance is taken as it is
        try:
            response = Response[method.__returning__].model_validate(  # type: ignore[name-defined]
                data, context={"bot": bot}
            )
        except ValidationError:
            return None
        return cast(TelegramType, response.result)
