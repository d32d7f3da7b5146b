"""A broadcast's content is checked as Telegram would check it, before anything is sent:
HTML, lengths after parsing (4096 for a text, 1024 for a caption), buttons and their URLs."""

from __future__ import annotations

import pytest

from runtime.broadcasts import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    ContentRefused,
    Media,
    markup,
    parse,
    visible_text,
)

DEEP = "https://t.me/shop_bot?start=plans"


def refused(body: str, media: Media | None = None, *, max_buttons: int = 8) -> ContentRefused:
    with pytest.raises(ContentRefused) as caught:
        parse(body, media, deep_link=DEEP, max_buttons=max_buttons)
    return caught.value


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("<b>bold", "html_unclosed"),
        ("<b>bold</i>", "html_unmatched"),
        ("<b><i>both</b></i>", "html_unmatched"),
        ("1 < 2", "html_lt"),
        ("<script>alert(1)</script>", "html_tag"),
        ("<span>hidden</span>", "html_span"),
        ('<a href="javascript:alert(1)">x</a>', "html_link"),
        ("<tg-emoji>👍</tg-emoji>", "html_emoji"),
        ("text</b>", "html_unexpected"),
    ],
)
def test_broken_html_is_refused_with_its_reason(source: str, reason: str) -> None:
    assert refused(source).reason == reason


def test_telegram_html_reads_as_telegram_shows_it() -> None:
    source = (
        '<b>New</b> <i>servers</i> &amp; <a href="https://example.com/a?b=1&amp;c=2">more</a>'
        ' <span class="tg-spoiler">soon</span> <pre><code class="language-sh">ls</code></pre>'
        " 1 &lt; 2 &#128512; a > b"
    )
    assert visible_text(source) == "New servers & more soon ls 1 < 2 😀 a > b"
    content = parse(source, None, deep_link=DEEP, max_buttons=8)
    assert content.text == source and content.buttons == []


def test_limits_count_the_text_after_parsing_in_utf16_units() -> None:
    fits = "<b>" + "x" * TEXT_LIMIT + "</b>"  # markup is not counted
    assert parse(fits, None, deep_link=DEEP, max_buttons=8).text == fits
    over = refused("x" * (TEXT_LIMIT + 1))
    assert (over.reason, over.params) == ("too_long", {"length": 4097, "limit": 4096})
    emoji = "😀" * (TEXT_LIMIT // 2 + 1)  # two UTF-16 units each
    assert refused(emoji).reason == "too_long"
    photo = Media("photo", "AgACAgIAAxkBAAI-file")
    assert parse("y" * CAPTION_LIMIT, photo, deep_link=DEEP, max_buttons=8).media == photo
    assert refused("y" * (CAPTION_LIMIT + 1), photo).params == {"length": 1025, "limit": 1024}
    assert parse("", photo, deep_link=DEEP, max_buttons=8).text == ""  # a file alone is fine
    assert refused("   ").reason == "empty"
    assert refused("<b></b>").reason == "empty"
    assert refused("x" * 20000).reason == "too_long_raw"


def test_buttons_are_the_last_lines_and_urls_must_be_web_links() -> None:
    body = (
        "Hello <b>all</b>\n\n"
        "[Site](https://example.com/x) [Status](http://status.example.com)\n[buy]\n[Renew]"
    )
    content = parse(body, None, deep_link=DEEP, max_buttons=8)
    assert content.text == "Hello <b>all</b>"
    assert content.buttons == [
        [
            {"text": "Site", "url": "https://example.com/x"},
            {"text": "Status", "url": "http://status.example.com"},
        ],
        [{"kind": "buy", "url": DEEP}],
        [{"kind": "renew", "url": DEEP}],
    ]
    labels = {"buy": "Купить", "renew": "Продлить"}
    assert markup(content.buttons, labels.__getitem__) == {
        "inline_keyboard": [
            [
                {"text": "Site", "url": "https://example.com/x"},
                {"text": "Status", "url": "http://status.example.com"},
            ],
            [{"text": "Купить", "url": DEEP}],
            [{"text": "Продлить", "url": DEEP}],
        ]
    }
    assert markup([], labels.__getitem__) is None


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript://example.com/%0Aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "tg://resolve?domain=x",
        "ftp://example.com/file",
        "https://",
        "https://exa mple.com",
        "https://" + "a" * 2100 + ".com",
    ],
)
def test_a_button_to_anything_but_a_web_link_is_refused(url: str) -> None:
    assert refused(f"Hi\n[Click]({url})").reason == "button_url"


def test_button_doors() -> None:
    assert refused("Hi\n[free money]").reason == "button_kind"
    assert refused("Hi\n[" + "x" * 65 + "](https://example.com)").reason == "button_label"
    five = " ".join(f"[b{i}](https://example.com/{i})" for i in range(5))
    assert refused(f"Hi\n{five}").reason == "buttons_per_row"
    three = "\n".join(f"[b{i}](https://example.com/{i})" for i in range(3))
    assert refused(f"Hi\n{three}", max_buttons=2).params == {"limit": 2}
    assert refused("Hi", Media("sticker", "x")).reason == "media_kind"
