-- What the background workers need beyond the initial schema: every scan reads what is
-- due, never the whole table.

-- Where each reminder scan has got to, as an (expires_at, id) position: the next scan of
-- that reminder reads only the subscriptions whose expiry crossed its offset since.
create table scan_cursors (
    name        text primary key,
    position_at timestamptz not null,
    position_id bigint not null default 0,
    updated_at  timestamptz not null default now()
);

-- "Your access has ended" reads the subscriptions whose expiry has just passed, whatever
-- the expiry cleanup has made of their status meanwhile; refunded ones are left out.
create index subscriptions_ended on subscriptions (expires_at, id) where status <> 'revoked';

-- Reconciliation rereads recently expired intents too: a Telegram Stars invoice can still
-- be paid after our intent expired.
create index payments_expired on payments (provider, created_at) where status = 'expired';

-- The notifier serves users' own messages (payments, access, reminders) before the
-- thousands of a broadcast queued ahead of them.
create index outbox_notify_direct on outbox (next_attempt_at, id)
    where status = 'pending' and kind = 'telegram.notify' and dedup_key not like 'broadcast:%';
