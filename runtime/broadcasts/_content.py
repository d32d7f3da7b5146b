"""What an admin's broadcast says: HTML text or a caption, an optional media file, and
optional buttons, parsed from the admin's message and checked against Telegram's rules.

Buttons are the message's last lines, one row per line::

    [Our channel](https://t.me/example) [Status](https://status.example.com)
    [buy]

``[label](url)`` is a URL button (``http://`` or ``https://`` only); ``[buy]`` and
``[renew]`` are deep links into the bot's plans screen, labelled in each recipient's
language.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._errors import ContentRefused
from ._html import utf16_len, visible_text

MEDIA_KINDS = ("photo", "video", "animation", "document")
TEXT_LIMIT = 4096
"""Telegram's limit on a message's text, after parsing, in UTF-16 code units."""
CAPTION_LIMIT = 1024
"""Telegram's limit on a media caption, counted the same way."""
RAW_LIMIT = 16384
"""The most the admin may write, markup included."""
LABEL_LIMIT = 64
URL_LIMIT = 2048
PER_ROW = 4
DEEP_LINKS = ("buy", "renew")

_TOKEN = re.compile(r"\[([^\[\]\n]{1,200})\](?:\((\S{1,4096}?)\)(?=\s|$))?")
_LINE = re.compile(rf"^\s*(?:{_TOKEN.pattern}\s*)+$")
_BROKEN = re.compile(r"^\s*\[[^\[\]\n]*\]\((.*)$")
"""A line that starts like a URL button but is not one (a space in its address...)."""


@dataclass(frozen=True, slots=True)
class Media:
    kind: str
    file_id: str


@dataclass(frozen=True, slots=True)
class Content:
    text: str
    """Telegram HTML; a caption when there is ``media`` (may then be empty)."""
    media: Media | None
    buttons: list[list[dict[str, str]]]
    """Rows of ``{"text", "url"}`` (URL buttons) or ``{"kind", "url"}`` (deep links)."""


def check_url(url: str) -> str:
    """``url`` when it may be a button's target; ``ContentRefused`` otherwise."""
    parts = urlsplit(url)
    if (
        len(url) > URL_LIMIT
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(ord(c) < 33 or c in "<>\"'\\" for c in url)
    ):
        raise ContentRefused("button_url", url=url[:100])
    return url


def _buttons(lines: Sequence[str], deep_link: str, max_buttons: int) -> list[list[dict[str, str]]]:
    rows: list[list[dict[str, str]]] = []
    for line in lines:
        row: list[dict[str, str]] = []
        for label, url in _TOKEN.findall(line):
            label = label.strip()
            if not url:
                if label.lower() not in DEEP_LINKS:
                    raise ContentRefused("button_kind", label=label[:LABEL_LIMIT])
                row.append({"kind": label.lower(), "url": deep_link})
                continue
            if not label or len(label) > LABEL_LIMIT:
                raise ContentRefused("button_label", limit=LABEL_LIMIT)
            row.append({"text": label, "url": check_url(url)})
        if len(row) > PER_ROW:
            raise ContentRefused("buttons_per_row", limit=PER_ROW)
        rows.append(row)
    if sum(len(r) for r in rows) > max_buttons:
        raise ContentRefused("too_many_buttons", limit=max_buttons)
    return rows


def parse(body: str, media: Media | None, *, deep_link: str, max_buttons: int) -> Content:
    """The broadcast in ``body`` (the admin's text after the audience), with ``media``;
    ``ContentRefused`` says what Telegram would refuse, before anything is sent."""
    if len(body) > RAW_LIMIT:
        raise ContentRefused("too_long_raw", limit=RAW_LIMIT)
    lines = body.strip().split("\n")
    first_button = len(lines)
    while first_button > 0 and _LINE.match(lines[first_button - 1]):
        first_button -= 1
    if first_button > 0 and (broken := _BROKEN.match(lines[first_button - 1])):
        raise ContentRefused("button_url", url=broken[1][:100])
    text = "\n".join(lines[:first_button]).strip()
    buttons = _buttons(lines[first_button:], deep_link, max_buttons)
    shown = utf16_len(visible_text(text))
    if media is None:
        if not visible_text(text).strip():
            raise ContentRefused("empty")
        if shown > TEXT_LIMIT:
            raise ContentRefused("too_long", length=shown, limit=TEXT_LIMIT)
    elif shown > CAPTION_LIMIT:
        raise ContentRefused("caption_too_long", length=shown, limit=CAPTION_LIMIT)
    if media is not None and media.kind not in MEDIA_KINDS:
        raise ContentRefused("media_kind", kind=media.kind)
    return Content(text, media, buttons)


def markup(buttons: object, label: Callable[[str], str]) -> dict[str, Any] | None:
    """The Bot API ``reply_markup`` for stored ``buttons``; deep links are labelled with
    ``label(kind)`` (in the recipient's language). None when there are none."""
    if not isinstance(buttons, list):
        return None
    rows: list[list[dict[str, str]]] = []
    for row in buttons:
        if not isinstance(row, list):
            continue
        out = []
        for button in row:
            if not isinstance(button, Mapping) or not isinstance(button.get("url"), str):
                continue
            kind = button.get("kind")
            text = label(kind) if isinstance(kind, str) else button.get("text")
            if isinstance(text, str) and text:
                out.append({"text": text, "url": button["url"]})
        if out:
            rows.append(out)
    return {"inline_keyboard": rows} if rows else None
