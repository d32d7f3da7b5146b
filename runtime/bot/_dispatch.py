"""Cheaper dispatch through aiogram, the same routing.

- aiogram runs a filter or handler that is a plain function (every magic filter, ``F.x``)
  through ``asyncio.to_thread``: a hand-over to a worker thread and back for each check,
  several per update. ``await_plain_callables`` makes them coroutines that call the plain
  function inline (magic filters only read the event).
- ``JsonBodySession`` sends each Bot API request as a JSON body instead of aiogram's
  url-encoded form (which prepares every field, dumps nested objects to JSON and then
  percent-quotes them); a request that uploads a file still goes as a form.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, cast

from aiogram import Bot, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.dispatcher.event.handler import CallableObject
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiohttp import ClientError

_JSON_HEADERS = {"Content-Type": "application/json"}


def _inline(callable_object: CallableObject) -> None:
    if callable_object.awaitable:
        return
    plain: Callable[..., Any] = callable_object.callback

    async def inline(*args: Any, **kwargs: Any) -> Any:
        return plain(*args, **kwargs)

    callable_object.callback = inline
    callable_object.awaitable = True


def await_plain_callables(router: Router) -> int:
    """Make every plain-function filter and handler of ``router`` and the routers inside it
    run inline; returns how many were changed."""
    changed = 0
    for each in router.chain_tail:
        for observer in each.observers.values():
            for handler in [observer._handler, *observer.handlers]:
                for item in [handler, *(handler.filters or ())]:
                    if not item.awaitable:
                        _inline(item)
                        changed += 1
    return changed


class JsonBodySession(AiohttpSession):
    """An ``AiohttpSession`` whose requests carry JSON bodies (see the module docstring)."""

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's
    ) -> TelegramType:
        files: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
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
        response = self.check_response(
            bot=bot, method=method, status_code=resp.status, content=raw_result
        )
        return cast(TelegramType, response.result)
