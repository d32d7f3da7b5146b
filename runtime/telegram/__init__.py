"""Sending to Telegram: a small Bot API client over httpx, used natively from trio.

The notifier is its user: ``sendMessage``, ``sendPhoto`` (and the other media by
``file_id``), ``deleteMessage``, with the Bot API's answers
mapped onto the project's failure classes (see ``BotApi``). The bot token is part of every
URL; it never reaches an exception message or a log line.
"""

from ._bot_api import BotApi, BotTokenRejected, ChatBlocked, TooManyRequests

__all__ = ["BotApi", "BotTokenRejected", "ChatBlocked", "TooManyRequests"]
