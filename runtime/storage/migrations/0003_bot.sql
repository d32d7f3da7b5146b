-- Broadcasts from admins to users. The messages themselves are outbox jobs (telegram.notify,
-- template "broadcast", dedup key 'broadcast:<id>:<user>'), enqueued in the transaction that
-- starts the broadcast, so a broadcast is sent whole or not at all, and at most once per user.
create table broadcasts (
    id                bigserial primary key,
    created_by        bigint not null,
    audience          text not null check (audience in ('all', 'active')),
    text              text not null check (length(text) between 1 and 4096),
    status            text not null default 'draft'
                      check (status in ('draft', 'sending', 'finished', 'cancelled')),
    total             integer not null default 0,
    delivered         integer not null default 0,
    blocked           integer not null default 0,
    failed            integer not null default 0,
    report_chat_id    bigint,
    report_message_id bigint,
    created_at        timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz
);
create index broadcasts_sending on broadcasts (id) where status = 'sending';

-- The jobs of one broadcast are counted by their dedup-key prefix ('broadcast:42:'): a
-- prefix LIKE uses this index whatever the database's collation.
create index outbox_dedup_key_prefix on outbox (dedup_key text_pattern_ops);
