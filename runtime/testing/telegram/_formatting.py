"""Formatted text as the Bot API parses it: HTML, MarkdownV2 and Markdown to plain text
plus entities (offsets in UTF-16 code units), with the errors a bot gets for bad markup
(an unescaped ``<`` in HTML, an unescaped ``.`` in MarkdownV2, an unclosed tag)."""

from __future__ import annotations

import re
from typing import Any

from ._errors import ApiError, bad_request

Entity = dict[str, Any]


def _cant_parse(reason: str) -> ApiError:
    return bad_request(f"can't parse entities: {reason}")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse(text: str, parse_mode: str | None, entities: Any = None) -> tuple[str, list[Entity]]:
    """``(plain text, entities)`` for ``text`` sent with ``parse_mode`` or ``entities``."""
    if entities:
        if not isinstance(entities, list):
            raise bad_request("can't parse entities JSON object")
        return text, [dict(e) for e in entities if isinstance(e, dict)]
    mode = (parse_mode or "").strip()
    if not mode:
        return text, []
    lowered = mode.lower()
    if lowered == "html":
        return _Html(text).parse()
    if lowered == "markdownv2":
        return _MarkdownV2(text).parse()
    if lowered == "markdown":
        return _Markdown(text).parse()
    raise bad_request(f"unsupported parse_mode: {mode}")


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.length = 0  # UTF-16 units written so far
        self.entities: list[Entity] = []

    def put(self, chars: str) -> None:
        self.out.append(chars)
        self.length += utf16_len(chars)

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode())

    def add(self, kind: str, start: int, **extra: Any) -> None:
        if self.length > start:
            entity: Entity = {"type": kind, "offset": start, "length": self.length - start}
            entity.update({k: v for k, v in extra.items() if v})
            self.entities.append(entity)

    def result(self) -> tuple[str, list[Entity]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.out), self.entities


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]+);")
_ATTR = re.compile(r"""\s*([a-zA-Z_-]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+))?""")


class _Html(_Builder):
    def parse(self) -> tuple[str, list[Entity]]:
        text = self.source
        stack: list[tuple[str, str, int, dict[str, str], int]] = []
        i = 0
        n = len(text)
        while i < n:
            char = text[i]
            if char == "&":
                match = _ENTITY.match(text, i)
                if match:
                    name = match.group(1)
                    if name.startswith("#"):
                        code = int(name[2:], 16) if name[1:2] in "xX" else int(name[1:])
                        self.put(chr(code) if 0 < code < 0x110000 else "\ufffd")
                        i = match.end()
                        continue
                    if name in _NAMED:
                        self.put(_NAMED[name])
                        i = match.end()
                        continue
                self.put("&")
                i += 1
                continue
            if char != "<":
                self.put(char)
                i += 1
                continue
            if not text.startswith("</", i):
                match = re.match(r"[a-zA-Z][a-zA-Z0-9-]*", text[i + 1 :])
                name = match.group(0).lower() if match else ""
                if name not in _HTML_TAGS:
                    raise _cant_parse(
                        f'Unsupported start tag "{name}" at byte offset {self.byte_offset(i)}'
                    )
            end = text.find(">", i)
            if end < 0:
                raise _cant_parse(f"Unclosed start tag at byte offset {self.byte_offset(i)}")
            inner = text[i + 1 : end]
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise _cant_parse(f"Unexpected end tag at byte offset {self.byte_offset(i)}")
                tag, kind, start, attrs, _ = stack.pop()
                if name and name != tag:
                    raise _cant_parse(
                        f"Unmatched end tag at byte offset {self.byte_offset(i)}, "
                        f'expected "</{tag}>", found "</{name}>"'
                    )
                language = attrs.get("class", "")
                inside_pre = bool(stack) and stack[-1][0] == "pre"
                if tag == "code" and language.startswith("language-") and inside_pre:
                    # <pre><code class="language-x"> is one pre entity with a language
                    stack[-1][3]["language"] = language.removeprefix("language-")
                    i = end + 1
                    continue
                self._close(tag, kind, start, attrs)
                i = end + 1
                continue
            match = re.match(r"[a-zA-Z][a-zA-Z0-9-]*", inner)
            name = match.group(0).lower() if match else ""
            if name not in _HTML_TAGS:
                raise _cant_parse(
                    f'Unsupported start tag "{name}" at byte offset {self.byte_offset(i)}'
                )
            attrs = {
                key.lower(): value.strip("\"'")
                for key, value in _ATTR.findall(inner[len(name) :])
                if key
            }
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise _cant_parse(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {self.byte_offset(i)}'
                )
            stack.append((name, _HTML_TAGS[name], self.length, attrs, i))
            i = end + 1
        if stack:
            tag = stack[-1][0]
            raise _cant_parse(f'Can\'t find end tag corresponding to start tag "{tag}"')
        return self.result()

    def _close(self, tag: str, kind: str, start: int, attrs: dict[str, str]) -> None:
        if tag == "a":
            href = attrs.get("href", "")
            if href.startswith("tg://user?id="):
                self.add("text_mention", start, user={"id": int(href.split("=", 1)[1] or 0)})
            else:
                self.add("text_link", start, url=href)
        elif tag == "pre":
            self.add("pre", start, language=attrs.get("language"))
        elif tag == "blockquote":
            expandable = "expandable" in attrs
            self.add("expandable_blockquote" if expandable else "blockquote", start)
        elif tag == "tg-emoji":
            self.add("custom_emoji", start, custom_emoji_id=attrs.get("emoji-id"))
        else:
            self.add(kind, start)


_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_V2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
}
_V2_KINDS = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
}


class _MarkdownV2(_Builder):
    def parse(self) -> tuple[str, list[Entity]]:
        text = self.source
        open_marks: list[tuple[str, int, int]] = []  # (mark, start, source index)
        links: list[tuple[int, int]] = []
        i = 0
        n = len(text)
        while i < n:
            char = text[i]
            if char == "\\":
                if i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                    self.put(text[i + 1])
                    i += 2
                    continue
                raise _cant_parse(
                    "Character '\\' is reserved and must be escaped with the preceding '\\'"
                )
            if char == "`":
                i = self._code(i)
                continue
            mark = None
            if text.startswith("__", i):
                mark = "__"
            elif text.startswith("||", i):
                mark = "||"
            elif char in "*_~":
                mark = char
            if mark is not None:
                if open_marks and open_marks[-1][0] == mark:
                    _, start, _ = open_marks.pop()
                    self.add(_V2_KINDS[mark], start)
                elif any(m == mark for m, _, _ in open_marks):
                    raise _cant_parse(
                        f"Can't find end of {_V2_NAMES[mark]} entity at byte offset "
                        f"{self.byte_offset(i)}"
                    )
                else:
                    open_marks.append((mark, self.length, i))
                i += len(mark)
                continue
            if char == "[":
                links.append((self.length, i))
                i += 1
                continue
            if char == "]" and links:
                start, _ = links.pop()
                if not text.startswith("(", i + 1):
                    raise _cant_parse(
                        "Character ']' is reserved and must be escaped with the preceding '\\'"
                    )
                close = text.find(")", i + 2)
                if close < 0:
                    raise _cant_parse(
                        f"Can't find end of a URL at byte offset {self.byte_offset(i + 1)}"
                    )
                url = text[i + 2 : close].replace("\\)", ")").replace("\\\\", "\\")
                self.add("text_link", start, url=url)
                i = close + 1
                continue
            if char == ">" and (i == 0 or text[i - 1] == "\n"):
                line_end = text.find("\n", i)
                line_end = n if line_end < 0 else line_end
                start = self.length
                quoted = _MarkdownV2(text[i + 1 : line_end]).parse()
                offset = self.length
                self.put(quoted[0])
                for entity in quoted[1]:
                    entity["offset"] += offset
                    self.entities.append(entity)
                self.add("blockquote", start)
                i = line_end
                continue
            if char in _V2_RESERVED:
                raise _cant_parse(
                    f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
                )
            self.put(char)
            i += 1
        if open_marks:
            mark, _, index = open_marks[-1]
            raise _cant_parse(
                f"Can't find end of {_V2_NAMES[mark]} entity at byte offset "
                f"{self.byte_offset(index)}"
            )
        if links:
            raise _cant_parse(
                "Can't find end of a TextUrl entity at byte offset "
                f"{self.byte_offset(links[-1][1])}"
            )
        return self.result()

    def _code(self, i: int) -> int:
        text = self.source
        fence = "```" if text.startswith("```", i) else "`"
        j = i + len(fence)
        language = None
        if fence == "```":
            newline = text.find("\n", j)
            first_line = text[j:newline] if newline >= 0 else ""
            if newline >= 0 and first_line and " " not in first_line and "`" not in first_line:
                language = first_line
                j = newline + 1
        start = self.length
        while j < len(text):
            if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in "`\\":
                self.put(text[j + 1])
                j += 2
                continue
            if text.startswith(fence, j):
                self.add("pre" if fence == "```" else "code", start, language=language)
                return j + len(fence)
            self.put(text[j])
            j += 1
        kind = "Pre" if fence == "```" else "Code"
        raise _cant_parse(f"Can't find end of {kind} entity at byte offset {self.byte_offset(i)}")


class _Markdown(_Builder):
    def parse(self) -> tuple[str, list[Entity]]:
        text = self.source
        i = 0
        n = len(text)
        while i < n:
            char = text[i]
            if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
                self.put(text[i + 1])
                i += 2
                continue
            if char in "*_`" or text.startswith("```", i):
                fence = "```" if text.startswith("```", i) else char
                close = text.find(fence, i + len(fence))
                if close < 0:
                    raise _cant_parse(
                        "Can't find end of the entity starting at byte offset "
                        f"{self.byte_offset(i)}"
                    )
                start = self.length
                self.put(text[i + len(fence) : close])
                kind = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}[fence]
                self.add(kind, start)
                i = close + len(fence)
                continue
            if char == "[":
                close = text.find("]", i + 1)
                if close < 0 or not text.startswith("(", close + 1):
                    raise _cant_parse(
                        "Can't find end of the entity starting at byte offset "
                        f"{self.byte_offset(i)}"
                    )
                url_end = text.find(")", close + 2)
                if url_end < 0:
                    raise _cant_parse(
                        "Can't find end of the entity starting at byte offset "
                        f"{self.byte_offset(i)}"
                    )
                start = self.length
                self.put(text[i + 1 : close])
                self.add("text_link", start, url=text[close + 2 : url_end])
                i = url_end + 1
                continue
            self.put(char)
            i += 1
        return self.result()
