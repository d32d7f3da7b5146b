"""What a notification job says: its template rendered in the user's language, and for
an access link, its QR code."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runtime.i18n import Translator, format_date, format_money

BROADCAST = "broadcast"
BROADCAST_DELETE = "broadcast_delete"
"""Delete a broadcast message (``message_id``) from the chat."""
ACCESS_READY = "access_ready"
ACCESS_EXTENDED_NEW_LINK = "access_extended_new_link"
WITH_QR = (ACCESS_READY, ACCESS_EXTENDED_NEW_LINK)
"""Templates that hand the user a link: it comes with its QR code."""
CAPTION_LIMIT = 1024
"""Telegram's limit on a photo caption, in characters."""
TEXT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    reply_markup: Mapping[str, Any] | None = None
    parse_mode: str | None = None


@dataclass(frozen=True, slots=True)
class Photo:
    png: bytes
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """A file Telegram already has (``file_id``), sent by ``kind``: photo, video..."""

    kind: str
    file_id: str
    caption: str | None = None
    reply_markup: Mapping[str, Any] | None = None
    parse_mode: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    message_id: int


Part = Text | Photo | Media | Delete


class BadNotification(ValueError):
    """The job cannot be rendered (unknown template, missing parameter): a bug in whoever
    queued it; retrying cannot help."""


def qr_png(data: str, *, scale: int = 8, border: int = 4) -> bytes:
    """``data`` as a QR code PNG, in memory."""
    import segno  # only when an access link is sent: not a cost of every start

    code = segno.make(data, error="m", boost_error=True, micro=False)
    out = io.BytesIO()
    code.save(out, kind="png", scale=scale, border=border)
    return out.getvalue()


def template_params(params: Mapping[str, Any], language: str) -> dict[str, Any]:
    """The job's parameters plus what texts show, in ``language``: ``amount`` and
    ``balance`` (money with its currency), ``expires`` (a date), ``hours`` (a reminder's
    offset)."""
    values: dict[str, Any] = dict(params)
    currency = params.get("currency")
    if params.get("amount_minor") is not None and currency:
        values["amount"] = format_money(
            int(params["amount_minor"]), str(currency), language=language
        )
    if params.get("balance_minor") is not None and currency:
        values["balance"] = format_money(
            int(params["balance_minor"]), str(currency), language=language
        )
    if params.get("expires_at"):
        values["expires"] = format_date(
            datetime.fromisoformat(str(params["expires_at"])), language=language
        )
    if params.get("offset_hours") is not None:
        values["hours"] = params["offset_hours"]
    return values


def render(translator: Translator, language: str, payload: Mapping[str, Any]) -> list[Part]:
    """The messages of one job, in order. Raises ``BadNotification``."""
    template = payload.get("template")
    params = payload.get("params") or {}
    if not isinstance(template, str) or not isinstance(params, Mapping):
        raise BadNotification("a notification needs a template and a params object")
    markup = payload.get("reply_markup")
    markup = markup if isinstance(markup, Mapping) else None
    if template == BROADCAST:
        return [_broadcast(translator, language, payload, params, markup)]
    if template == BROADCAST_DELETE:
        message_id = payload.get("message_id")
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise BadNotification("a broadcast deletion without a message_id")
        return [Delete(message_id)]
    key = f"notify.{template}"
    if not translator.has(key):
        raise BadNotification(f"unknown notification template {template!r}")
    try:
        text = translator.t(language, key, **template_params(params, language))
    except (KeyError, IndexError, ValueError) as exc:
        raise BadNotification(f"template {template!r}: {type(exc).__name__}: {exc}") from None
    access_url = params.get("access_url")
    if template in WITH_QR and isinstance(access_url, str) and access_url:
        png = qr_png(access_url)
        if len(text) <= CAPTION_LIMIT:  # one message: the link and its QR code together
            return [Photo(png, text)]
        return [
            Text(text[:TEXT_LIMIT], markup),
            Photo(png, translator.t(language, "notify.access_qr")),
        ]
    return [Text(text[:TEXT_LIMIT], markup)]


def _broadcast(
    translator: Translator,
    language: str,
    payload: Mapping[str, Any],
    params: Mapping[str, Any],
    markup: Mapping[str, Any] | None,
) -> Part:
    """The admin's text (Telegram HTML when ``html``, checked when it was written), with
    its media and buttons; ``buy``/``renew`` buttons are labelled in ``language``."""
    from runtime.broadcasts import markup as broadcast_markup  # a broadcast's: not held idle

    text = params.get("text") or payload.get("text") or ""
    html = payload.get("html") is True
    buttons = broadcast_markup(
        payload.get("buttons"), lambda kind: translator.t(language, f"broadcasts.button_{kind}")
    )
    markup = buttons or markup
    media = payload.get("media")
    if not isinstance(text, str):
        raise BadNotification("a broadcast's text must be a string")
    if isinstance(media, Mapping):
        kind, file_id = media.get("kind"), media.get("file_id")
        if not isinstance(kind, str) or not isinstance(file_id, str) or not file_id:
            raise BadNotification("a broadcast's media needs a kind and a file_id")
        return Media(kind, file_id, text or None, markup, "HTML" if html else None)
    if not text.strip():
        raise BadNotification("a broadcast without text")
    if html:
        return Text(text, markup, "HTML")
    return Text(text[:TEXT_LIMIT], markup)
