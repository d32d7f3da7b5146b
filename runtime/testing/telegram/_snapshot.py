"""The emulator's state as plain JSON data, and back: what a long-running emulator (the
sandbox's) keeps across restarts.

Kept: users, each bot's chats (messages, transcripts, the next message id), the updates
not yet taken, the next update id, payments, Stars transactions, invoice links, blocked
users, the bot's commands, and the files the kept messages show. Left out: what lives
only for seconds (button presses waiting for an answer, pre-checkout queries), the call
log, the repeatable update history, faults and outages, webhooks (the bot sets its own
again when it starts). Everything kept is bounded by the emulator's ``Retention``.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

from ._errors import EmulatorError
from ._state import (
    BotState,
    Button,
    ChatState,
    Invoice,
    Kind,
    Message,
    Payment,
    PendingUpdate,
    StoredFile,
    TranscriptEntry,
    buttons_of,
    peek,
)

if TYPE_CHECKING:
    from ._emulator import TelegramEmulator

VERSION = 1


def _bytes(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unbytes(text: Any) -> bytes | None:
    return None if text is None else base64.b64decode(str(text), validate=True)


def _newest(items: list[Any], keep: int | None) -> list[Any]:
    return items if keep is None else items[-keep:] if keep > 0 else []


def _invoice(invoice: Invoice) -> dict[str, Any]:
    return dataclasses.asdict(invoice)


def _message(message: Message) -> dict[str, Any]:
    out = {f.name: getattr(message, f.name) for f in dataclasses.fields(Message)}
    out["photo"] = _bytes(message.photo)
    out["document"] = _bytes(message.document)
    out["invoice"] = None if message.invoice is None else _invoice(message.invoice)
    return out


def _unmessage(data: dict[str, Any]) -> Message:
    fields = dict(data)
    fields["photo"] = _unbytes(fields.get("photo"))
    fields["document"] = _unbytes(fields.get("document"))
    invoice = fields.get("invoice")
    fields["invoice"] = None if invoice is None else Invoice(**invoice)
    return Message(**fields)


def _raw_buttons(rows: list[list[Button]]) -> list[list[dict[str, Any]]]:
    return [
        [
            b.raw
            or {
                "text": b.text,
                **({"callback_data": b.callback_data} if b.callback_data is not None else {}),
                **({"url": b.url} if b.url is not None else {}),
                **({"pay": True} if b.pay else {}),
            }
            for b in row
        ]
        for row in rows
    ]


def _entry(entry: TranscriptEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind.value,
        "chat_id": entry.chat_id,
        "actor": entry.actor,
        "at": entry.at,
        "message_id": entry.message_id,
        "text": entry.text,
        "buttons": _raw_buttons(entry.buttons),
        "data": entry.data,
    }


def _unentry(data: dict[str, Any]) -> TranscriptEntry:
    return TranscriptEntry(
        seq=int(data["seq"]),
        kind=Kind(data["kind"]),
        chat_id=int(data["chat_id"]),
        actor=data["actor"],
        at=float(data["at"]),
        message_id=data.get("message_id"),
        text=data.get("text"),
        buttons=buttons_of({"inline_keyboard": data.get("buttons") or []}),
        data=dict(data.get("data") or {}),
    )


def _chat(chat: ChatState, keep: int | None) -> dict[str, Any]:
    next_id, chat.message_ids = peek(chat.message_ids)
    messages = _newest(list(chat.messages.values()), keep)
    return {
        "id": chat.id,
        "type": chat.type,
        "wire": chat.wire,
        "user_id": chat.user_id,
        "instance": chat.instance,
        "next_message_id": next_id,
        "messages": [_message(m) for m in messages],
        "transcript": [_entry(e) for e in _newest(chat.transcript, keep)],
    }


def _unchat(data: dict[str, Any]) -> ChatState:
    chat = ChatState(
        id=int(data["id"]),
        type=data["type"],
        wire=dict(data["wire"]),
        user_id=data.get("user_id"),
        instance=str(data.get("instance", "")),
        message_ids=itertools.count(int(data["next_message_id"])),
    )
    for raw in data.get("messages", []):
        message = _unmessage(raw)
        chat.messages[message.message_id] = message
    chat.transcript = [_unentry(e) for e in data.get("transcript", [])]
    return chat


def _bot(emu: TelegramEmulator, bot: BotState) -> dict[str, Any]:
    keep = emu.retention.updates
    next_update, bot.update_ids = peek(bot.update_ids)
    return {
        "id": bot.id,
        "next_update_id": next_update,
        "chats": [_chat(c, emu.retention.per_chat) for c in bot.chats.values()],
        "updates": [
            {"update_id": u.update_id, "kind": u.kind, "payload": u.payload, "forced": u.forced}
            for u in bot.updates
        ],
        "payments": [dataclasses.asdict(p) for p in _newest(list(bot.payments.values()), keep)],
        "star_transactions": _newest(bot.star_transactions, keep),
        "invoice_links": [_invoice(i) for i in _newest(list(bot.invoice_links.values()), keep)],
        "blocked": sorted(bot.blocked),
        "commands": bot.commands,
    }


def _unbot(bot: BotState, data: dict[str, Any]) -> None:
    bot.update_ids = itertools.count(int(data["next_update_id"]))
    bot.chats = {chat.id: chat for chat in map(_unchat, data.get("chats", []))}
    bot.updates = [
        PendingUpdate(int(u["update_id"]), str(u["kind"]), dict(u["payload"]), bool(u["forced"]))
        for u in data.get("updates", [])
    ]
    bot.payments = {
        p.telegram_payment_charge_id: p for p in (Payment(**p) for p in data.get("payments", []))
    }
    bot.star_transactions = list(data.get("star_transactions", []))
    links = [Invoice(**raw) for raw in data.get("invoice_links", [])]
    bot.invoice_links = {str(i.link): i for i in links}
    bot.blocked = {int(u) for u in data.get("blocked", [])}
    bot.commands = dict(data.get("commands", {}))


def _file(stored: StoredFile) -> dict[str, Any]:
    out = dataclasses.asdict(stored)
    out["data"] = _bytes(stored.data)
    return out


def snapshot(emu: TelegramEmulator) -> dict[str, Any]:
    """The state to keep, as JSON-ready data."""
    bots = [_bot(emu, bot) for bot in emu._bots.values()]
    shown = {
        message["file_id"]
        for bot in bots
        for chat in bot["chats"]
        for message in chat["messages"]
        if message.get("file_id")
    }
    seq, emu._seq = peek(emu._seq)
    number, emu._numbers = peek(emu._numbers)
    user_id, emu._user_ids = peek(emu._user_ids)
    return {
        "version": VERSION,
        "next_seq": seq,
        "next_number": number,
        "next_user_id": user_id,
        "users": [
            {
                "id": u.id,
                "first_name": u.first_name,
                "last_name": u.last_name,
                "username": u.username,
                "language_code": u.language_code,
                "is_premium": u.is_premium,
            }
            for u in emu._users.values()
        ],
        "deactivated": sorted(emu._deactivated),
        "files": [_file(f) for file_id, f in emu.files.items() if file_id in shown],
        "bots": bots,
    }


def restore(emu: TelegramEmulator, data: Any) -> None:
    """Replace the emulator's users and chats with ``data`` (from ``snapshot``).

    Raises ``EmulatorError`` when ``data`` is not a snapshot this emulator can take; the
    emulator is then left as it was."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise EmulatorError("not an emulator snapshot of version 1")
    from ._emulator import SimUser

    try:
        users = {
            int(u["id"]): SimUser(
                emu,
                int(u["id"]),
                str(u["first_name"]),
                last_name=u.get("last_name"),
                username=u.get("username"),
                language_code=u.get("language_code"),
                is_premium=bool(u.get("is_premium")),
            )
            for u in data["users"]
        }
        files = {}
        for raw in data.get("files", []):
            stored = StoredFile(**{**raw, "data": _unbytes(raw.get("data"))})
            files[stored.file_id] = stored
        restored: list[tuple[BotState, dict[str, Any]]] = []
        for raw in data["bots"]:
            bot = emu._bots.get(int(raw["id"]))
            if bot is None:
                continue
            scratch = dataclasses.replace(bot)
            _unbot(scratch, raw)
            restored.append((bot, raw))
        counters = (
            int(data["next_seq"]),
            int(data["next_number"]),
            int(data["next_user_id"]),
        )
        deactivated = {int(u) for u in data.get("deactivated", [])}
    except (KeyError, TypeError, ValueError) as exc:
        raise EmulatorError(f"not a readable emulator snapshot: {exc!r}") from exc
    emu._users = users
    emu._deactivated = deactivated
    emu.files.update(files)
    for bot, raw in restored:
        _unbot(bot, raw)
        emu._first_update_id[bot.id] = int(raw["next_update_id"])
    emu._seq = itertools.count(counters[0])
    emu._numbers = itertools.count(counters[1])
    emu._user_ids = itertools.count(counters[2])
    emu._touch()
