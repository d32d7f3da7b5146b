"""Broadcast storage on a real PostgreSQL: segment counts for users in every state, the
jobs a broadcast enqueues, a stop that drops exactly the unsent messages, deletions
queued once per recorded message, and the audit log of every admin action."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from runtime.storage import Database, referrals, users
from runtime.storage import broadcasts as store
from tests.bot.test_admin_storage import execute, fetch

ADMIN = 900
NOW = datetime.now(UTC)


async def subscription(
    db: Database, user: int, plan: str, kind: str, *, ends_in: timedelta, status: str = "active"
) -> None:
    await execute(
        db,
        "insert into subscriptions (user_id, plan_id, kind, status, starts_at, expires_at,"
        " vpn_backend) values ($1, $2, $3, $4, $5, $6, 'marzban')",
        user,
        plan,
        kind,
        status,
        NOW - timedelta(days=60),
        NOW + ends_in,
    )


async def population(db: Database) -> tuple[str, str]:
    """1: paid on month (ru); 2: on a trial; 3: expired; 4: never subscribed; 5: paid on
    year and on a trial; 6: blocked the bot (active); 7: a trial that ended; 8: banned
    (active); 9: came through an acquisition link; 10: invited by 1. Returns the link's
    code and 1's referral code."""
    for uid in range(1, 11):
        await users.touch_user(db, uid, username=None, language="ru" if uid == 1 else "en")
    day = timedelta(days=1)
    await subscription(db, 1, "month", "paid", ends_in=10 * day)
    await subscription(db, 2, "trial", "trial", ends_in=day)
    await subscription(db, 3, "month", "paid", ends_in=-day, status="expired")
    await subscription(db, 5, "year", "paid", ends_in=100 * day)
    await subscription(db, 5, "trial", "trial", ends_in=day)
    await subscription(db, 6, "month", "paid", ends_in=10 * day)
    await users.mark_blocked(db, 6)
    await subscription(db, 7, "trial", "trial", ends_in=-day)  # active status, time over
    await subscription(db, 8, "month", "paid", ends_in=10 * day)
    await execute(db, "update users set banned_at = now() where telegram_id = 8")
    link = await referrals.create_ad_link(db, "spring", by=ADMIN, operation_key="k1")
    await referrals.record_start(db, 1)
    code = await referrals.code_of(db, 1)
    await referrals.record_start(db, 9, ad_code=link.code)
    await referrals.record_start(db, 10, referral_code=code)
    return link.code, code


EXPECTED = [
    ("all", None, {1, 2, 3, 4, 5, 7, 9, 10}),
    ("active", None, {1, 2, 5}),
    ("inactive", None, {3, 4, 7, 9, 10}),
    ("expired", None, {3, 7}),
    ("trial", None, {2}),
    ("plan", "month", {1}),
    ("plan", "year", {5}),
    ("plan", "none", set()),
    ("lang", "ru", {1}),
    ("lang", "en", {2, 3, 4, 5, 7, 9, 10}),
    ("link", "nosuchlink", set()),
]


async def test_every_segment_counts_the_users_in_its_state(db: Database) -> None:
    ad_code, referral_code = await population(db)
    by_link = [("link", ad_code, {9}), ("link", referral_code, {10})]
    for segment, arg, members in EXPECTED + by_link:
        assert await store.count_segment(db, segment, arg) == len(members), (segment, arg)
        draft, reach = await store.create_broadcast(
            db, created_by=ADMIN, audience=segment, audience_arg=arg, text="x"
        )
        assert reach == len(members)
        await store.start_broadcast(db, draft.id, report_chat_id=ADMIN, report_message_id=None)
        jobs = await fetch(
            db, "select payload from outbox where dedup_key like $1", store.prefix(draft.id) + "%"
        )
        assert {j["payload"]["chat_id"] for j in jobs} == members, (segment, arg)
    assert set(store.SEGMENTS) == {s for s, _, _ in EXPECTED}


@pytest.mark.parametrize(
    ("segment", "arg"),
    [
        ("nobody", None),
        ("all", "x"),
        ("plan", None),
        ("plan", "a b"),
        ("lang", "x' or 1=1"),
        ("link", "ABC' or 1=1"),
        ("link", None),
    ],
)
async def test_a_segment_that_does_not_exist_or_a_bad_argument_is_refused(
    db: Database, segment: str, arg: str | None
) -> None:
    with pytest.raises(ValueError, match="segment"):
        await store.create_broadcast(
            db, created_by=ADMIN, audience=segment, audience_arg=arg, text="x"
        )
    assert await fetch(db, "select id from broadcasts") == []


async def test_a_media_broadcast_carries_its_file_buttons_and_html(db: Database) -> None:
    await population(db)
    buttons = [[{"text": "Site", "url": "https://example.com"}], [{"kind": "buy", "url": "u"}]]
    draft, _ = await store.create_broadcast(
        db,
        created_by=ADMIN,
        audience="trial",
        text="<b>Hi</b>",
        html=True,
        media=("video", "BAACAgIAAxkBAAI-video"),
        buttons=buttons,
        operation_key="update:77",
    )
    again, _ = await store.create_broadcast(  # the same command handled twice
        db, created_by=ADMIN, audience="trial", text="<b>Hi</b>", operation_key="update:77"
    )
    assert again.id == draft.id
    assert len(await fetch(db, "select id from broadcasts")) == 1
    await store.start_broadcast(db, draft.id, report_chat_id=ADMIN, report_message_id=None)
    (job,) = await fetch(db, "select dedup_key, payload from outbox")
    assert job["dedup_key"] == f"broadcast:{draft.id}:2"
    assert job["payload"] == {
        "chat_id": 2,
        "template": "broadcast",
        "broadcast_id": draft.id,
        "params": {"text": "<b>Hi</b>"},
        "html": True,
        "media": {"kind": "video", "file_id": "BAACAgIAAxkBAAI-video"},
        "buttons": buttons,
    }


async def test_the_database_refuses_a_broadcast_it_could_not_send(db: Database) -> None:
    for bad in (
        "insert into broadcasts (created_by, audience, text) values (1, 'all', '')",
        "insert into broadcasts (created_by, audience, text, media_kind) values"
        " (1, 'all', 'x', 'photo')",
        "insert into broadcasts (created_by, audience, text, media_kind, media_file_id)"
        " values (1, 'all', 'x', 'sticker', 'f')",
        "insert into broadcasts (created_by, audience, text) values (1, 'All; --', 'x')",
    ):
        with pytest.raises(Exception, match="violates check constraint"):
            await execute(db, bad)


async def test_a_stop_drops_exactly_the_messages_not_on_their_way(db: Database) -> None:
    for uid in range(1, 6):
        await users.touch_user(db, uid, username=None, language="en")
    draft, _ = await store.create_broadcast(db, created_by=ADMIN, audience="all", text="x")
    await store.start_broadcast(db, draft.id, report_chat_id=ADMIN, report_message_id=None)
    key = store.prefix(draft.id)
    # 1 was sent; 2 is being sent (started under a live claim); 3 was started by a
    # process that died (its claim expired); 4 and 5 wait.
    await execute(db, "update outbox set status = 'done' where dedup_key = $1", key + "1")
    await execute(
        db,
        "update outbox set claimed_by = 'n', claims = 1, started_at = now(),"
        " claim_expires_at = now() + interval '1 minute' where dedup_key = $1",
        key + "2",
    )
    await execute(
        db,
        "update outbox set claimed_by = 'dead', claims = 1,"
        " started_at = now() - interval '5 minutes',"
        " claim_expires_at = now() - interval '1 minute' where dedup_key = $1",
        key + "3",
    )
    assert await store.cancel_broadcast(db, draft.id, by=ADMIN) == 3
    assert await store.cancel_broadcast(db, draft.id, by=ADMIN) is None
    rows = await fetch(db, "select dedup_key, status, last_error from outbox order by dedup_key")
    assert [(r["status"], r["last_error"]) for r in rows] == [
        ("done", None),
        ("pending", None),
        ("dead", "broadcast cancelled"),
        ("dead", "broadcast cancelled"),
        ("dead", "broadcast cancelled"),
    ]
    await execute(db, "update outbox set status = 'done' where dedup_key = $1", key + "2")
    progress = await store.broadcast_progress(db, draft.id)
    assert (progress.delivered, progress.cancelled, progress.failed, progress.pending) == (
        2,
        3,
        0,
        0,
    )
    found = await store.summary(db, draft.id)
    assert found is not None and found.broadcast.status == "cancelled"


async def test_deletion_is_queued_once_per_recorded_message(db: Database) -> None:
    for uid in range(1, 5):
        await users.touch_user(db, uid, username=None, language="en")
    draft, _ = await store.create_broadcast(db, created_by=ADMIN, audience="all", text="x")
    assert await store.delete_messages(db, draft.id, by=ADMIN) is None  # a draft
    await store.start_broadcast(db, draft.id, report_chat_id=ADMIN, report_message_id=None)
    assert await store.delete_messages(db, draft.id, by=ADMIN) is None  # being sent
    key = store.prefix(draft.id)
    for uid, message_id in ((1, 11), (2, 12)):
        await execute(
            db,
            "update outbox set status = 'done', result = $2::jsonb where dedup_key = $1",
            key + str(uid),
            {"message_id": message_id},
        )
    await execute(db, "update outbox set status = 'done' where dedup_key = $1", key + "3")
    await execute(db, "update outbox set status = 'dead' where dedup_key = $1", key + "4")
    progress = await store.broadcast_progress(db, draft.id)
    assert await store.finish_broadcast(db, draft.id, progress)
    started = await store.delete_messages(db, draft.id, by=ADMIN)
    assert started == store.DeletionStarted(2, repeated=False)
    assert await store.delete_messages(db, draft.id, by=ADMIN + 1) == store.DeletionStarted(
        0, repeated=True
    )
    jobs = await fetch(
        db,
        "select dedup_key, payload from outbox where dedup_key like 'broadcast:del:%' order by id",
    )
    assert [(j["dedup_key"], j["payload"]["message_id"]) for j in jobs] == [
        (f"broadcast:del:{draft.id}:1", 11),
        (f"broadcast:del:{draft.id}:2", 12),
    ]
    assert jobs[0]["payload"]["template"] == "broadcast_delete"
    # the deletions do not count as messages of the broadcast
    assert (await store.broadcast_progress(db, draft.id)).total == 4
    found = await store.summary(db, draft.id)
    assert found is not None and found.deletion.pending == 2
    await execute(
        db,
        "update outbox set status = 'dead', last_error = $2 where dedup_key = $1",
        f"broadcast:del:{draft.id}:1",
        "DependencyError: telegram: deleteMessage: Bad Request: message can't be deleted",
    )
    await execute(
        db, "update outbox set status = 'done' where dedup_key = $1", f"broadcast:del:{draft.id}:2"
    )
    (listed,) = await store.recent(db, 10)
    assert listed.deletion == store.DeletionProgress(
        total=2, pending=0, deleted=1, too_old=1, failed=0
    )
    # a user who blocked the bot since: the notifier skips the deletion (done, blocked)
    await execute(
        db,
        "update outbox set last_error = 'skipped: the user blocked the bot' where dedup_key = $1",
        f"broadcast:del:{draft.id}:2",
    )
    found = await store.summary(db, draft.id)
    assert found is not None and (found.deletion.deleted, found.deletion.failed) == (0, 1)


async def test_every_admin_action_is_in_the_audit_log_once(db: Database) -> None:
    await users.touch_user(db, 1, username=None, language="en")
    draft, _ = await store.create_broadcast(
        db, created_by=ADMIN, audience="all", text="x", operation_key="update:1"
    )
    await store.create_broadcast(
        db, created_by=ADMIN, audience="all", text="x", operation_key="update:1"
    )
    for _ in range(2):
        await store.start_broadcast(
            db, draft.id, report_chat_id=ADMIN, report_message_id=None, by=ADMIN
        )
    await store.cancel_broadcast(db, draft.id, by=ADMIN)
    await store.delete_messages(db, draft.id, by=ADMIN)
    await store.delete_messages(db, draft.id, by=ADMIN)
    log = await fetch(db, "select actor, action, details from audit_log order by id")
    assert [(e["actor"], e["action"]) for e in log] == [
        (f"admin:{ADMIN}", "broadcast.create"),
        (f"admin:{ADMIN}", "broadcast.start"),
        (f"admin:{ADMIN}", "broadcast.stop"),
        (f"admin:{ADMIN}", "broadcast.delete"),
    ]
    assert all(json.loads(e["details"])["broadcast_id"] == draft.id for e in log)
