"""The peer: an echo bot as aiogram's own examples write one (``dp.start_polling``).

    BOT_TOKEN=... TELEGRAM_API=http://127.0.0.1:PORT python bench/aiogram_echo_bot.py

Run by ``startup_bench.py`` and ``memory_bench.py`` against the Telegram emulator: what a
user who needs no durability, supervision or database would run.
"""

import asyncio
import os

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

dp = Dispatcher()


@dp.message()
async def echo(message: Message) -> None:
    await message.answer(message.text or "…")


async def main() -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["TELEGRAM_API"]))
    bot = Bot(os.environ["BOT_TOKEN"], session=session)
    await dp.start_polling(bot)


if __name__ == "__main__":
    asyncio.run(main())
