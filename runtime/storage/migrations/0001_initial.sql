-- The whole product's schema. Money is bigint minor units (whole Stars for XTR), never floats.
-- Partial indexes cover what the workers scan, so a scan costs what is due, not the table.

create table users (
    telegram_id     bigint primary key,
    username        text,
    language        text not null default 'en',
    trial_used_at   timestamptz,
    balance_minor   bigint not null default 0 check (balance_minor >= 0),
    auto_renew      boolean not null default false,
    blocked_bot_at  timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

create table subscriptions (
    id                  bigserial primary key,
    user_id             bigint not null references users (telegram_id),
    plan_id             text not null,
    kind                text not null check (kind in ('trial', 'paid')),
    status              text not null default 'active'
                        check (status in ('active', 'expired', 'revoked')),
    starts_at           timestamptz not null,
    expires_at          timestamptz not null,
    activation_status   text not null default 'pending'
                        check (activation_status in ('pending', 'active', 'failed', 'revoked')),
    vpn_backend         text not null,
    vpn_account         text,
    access_url          text,
    activation_attempts integer not null default 0,
    next_attempt_at     timestamptz,
    last_error          text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    check (expires_at > starts_at)
);
create index subscriptions_by_user on subscriptions (user_id, expires_at desc);
create index subscriptions_due_expiry on subscriptions (expires_at) where status = 'active';
create index subscriptions_due_activation on subscriptions (next_attempt_at)
    where activation_status = 'pending';

create table payments (
    id              uuid primary key default gen_random_uuid(),
    user_id         bigint not null references users (telegram_id),
    provider        text not null,
    external_id     text,
    amount_minor    bigint not null check (amount_minor > 0),
    currency        text not null,
    status          text not null default 'created'
                    check (status in ('created', 'invoiced', 'paid', 'finalized', 'refunded',
                                      'expired', 'failed')),
    purpose         text not null check (purpose in ('subscription', 'topup', 'renewal')),
    plan_id         text,
    subscription_id bigint references subscriptions (id),
    invoice_url     text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    expires_at      timestamptz,
    paid_at         timestamptz,
    finalized_at    timestamptz,
    refunded_at     timestamptz,
    unique (provider, external_id)
);
create index payments_by_user on payments (user_id, created_at desc);
create index payments_open on payments (provider, created_at) where status in ('created', 'invoiced');

-- A payment's status only moves forward. The services update with a guard on the previous
-- status; this trigger is the backstop that no code path can get around.
create function payments_forward_only() returns trigger language plpgsql as $$
begin
    if new.status = old.status then
        return new;
    end if;
    if not (
        (old.status = 'created'   and new.status in ('invoiced', 'paid', 'expired', 'failed')) or
        (old.status = 'invoiced'  and new.status in ('paid', 'expired', 'failed')) or
        (old.status = 'expired'   and new.status = 'paid') or
        (old.status = 'paid'      and new.status in ('finalized', 'refunded')) or
        (old.status = 'finalized' and new.status = 'refunded')
    ) then
        raise exception 'payment % cannot move from % to %', old.id, old.status, new.status
            using errcode = 'check_violation';
    end if;
    new.updated_at := now();
    return new;
end;
$$;
create trigger payments_forward_only before update of status on payments
    for each row execute function payments_forward_only();

-- Telegram updates are stored before they are acknowledged, then processed from here.
create table telegram_updates (
    update_id        bigint primary key,
    payload          jsonb not null,
    received_at      timestamptz not null default now(),
    processed_at     timestamptz,
    attempts         integer not null default 0,
    claimed_by       text,
    claim_expires_at timestamptz,
    last_error       text
);
create index telegram_updates_pending on telegram_updates (update_id) where processed_at is null;

-- Side effects written in the same transaction as the state change, done by workers that
-- claim rows. A claim moves next_attempt_at to the claim's expiry, so the due scan skips
-- claimed rows and finds them again when a claimer dies.
create table outbox (
    id               bigserial primary key,
    kind             text not null,
    dedup_key        text not null unique,
    payload          jsonb not null default '{}'::jsonb,
    status           text not null default 'pending' check (status in ('pending', 'done', 'dead')),
    attempts         integer not null default 0,
    max_attempts     integer not null default 10 check (max_attempts >= 1),
    next_attempt_at  timestamptz not null default now(),
    claimed_by       text,
    claim_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    done_at          timestamptz
);
create index outbox_due on outbox (kind, next_attempt_at) where status = 'pending';

-- Alert deduplication shared by every process on this database.
create table alert_state (
    key             text primary key,
    last_sent_at    timestamptz not null,
    suppressed      integer not null default 0
);

-- Work that runs in one place at a time. The fencing token grows with every new holder;
-- writes made under a lease check it, so a holder that lost its lease cannot write.
create table leases (
    name          text primary key,
    holder        text not null,
    fencing_token bigint not null,
    expires_at    timestamptz not null,
    acquired_at   timestamptz not null default now(),
    renewed_at    timestamptz not null default now()
);
