"""Broadcasts as admins write them: the content (Telegram HTML, media, buttons), checked
before anything is sent. Storage and sending live in ``runtime.storage.broadcasts`` and
the notifier."""

from ._content import (
    CAPTION_LIMIT,
    DEEP_LINKS,
    MEDIA_KINDS,
    TEXT_LIMIT,
    Content,
    Media,
    check_url,
    markup,
    parse,
)
from ._errors import ContentRefused
from ._html import utf16_len, visible_text

__all__ = [
    "CAPTION_LIMIT",
    "DEEP_LINKS",
    "MEDIA_KINDS",
    "TEXT_LIMIT",
    "Content",
    "ContentRefused",
    "Media",
    "check_url",
    "markup",
    "parse",
    "utf16_len",
    "visible_text",
]
