"""Telegram's HTML, checked before a broadcast is sent: a malformed text is refused to
the admin with the reason, instead of being refused by Telegram once per recipient.

The rules are the Bot API's ("Formatting options", HTML style): only its tags, properly
nested and closed; ``<`` and ``&`` written as ``&lt;`` and ``&amp;`` outside tags; links
only to ``http(s)://`` and ``tg://``. Limits count the text as Telegram does: after
parsing, in UTF-16 code units.
"""

from __future__ import annotations

import re
from html import unescape

from ._errors import ContentRefused

_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)>")
_ATTR = re.compile(r"""\s*([a-zA-Z_-]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+))?""")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_LINK = re.compile(r"^(https?://[^\s<>\"']+|tg://[^\s<>\"']+)$", re.IGNORECASE)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _attrs(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    position = 0
    while position < len(raw):
        match = _ATTR.match(raw, position)
        if match is None or match.end() == position:
            break
        value = match.group(2) or ""
        found[match.group(1).lower()] = unescape(value.strip("\"'"))
        position = match.end()
    return found


def _check_tag(name: str, attrs: dict[str, str], offset: int) -> None:
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise ContentRefused("html_span", at=offset)
    if name == "a":
        href = attrs.get("href", "")
        if not _LINK.match(href):
            raise ContentRefused("html_link", at=offset)
    if name == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
        raise ContentRefused("html_emoji", at=offset)


def visible_text(source: str) -> str:
    """The text Telegram shows for ``source`` (Telegram HTML); ``ContentRefused`` with the
    reason when Telegram would refuse it."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&":
            match = _ENTITY.match(source, i)
            if match:
                out.append(unescape(match.group(0)))
                i = match.end()
            else:
                out.append("&")
                i += 1
            continue
        if char != "<":
            out.append(char)
            i += 1
            continue
        match = _TAG.match(source, i)
        if match is None:
            raise ContentRefused("html_lt", at=i)
        closing, name, rest = match.group(1), match.group(2).lower(), match.group(3)
        if name not in _TAGS:
            raise ContentRefused("html_tag", tag=name, at=i)
        if closing:
            if not stack:
                raise ContentRefused("html_unexpected", tag=name, at=i)
            opened, _ = stack.pop()
            if opened != name:
                raise ContentRefused("html_unmatched", tag=name, expected=opened, at=i)
        else:
            _check_tag(name, _attrs(rest), i)
            stack.append((name, i))
        i = match.end()
    if stack:
        name, at = stack[-1]
        raise ContentRefused("html_unclosed", tag=name, at=at)
    return "".join(out)
