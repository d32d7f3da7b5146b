-- Referrals and acquisition links: where each user came from, recorded once, and the
-- rewards their payments earn the users who brought them.
--
-- `user_origins` holds one row per user, written at the user's first `/start` and never
-- changed: the primary key makes the first start win (a second start, a duplicate update,
-- a concurrent start in another process finds the row taken), and the table refuses
-- UPDATE and DELETE. The inviter must have a row of their own already (a foreign key to
-- this table), so an invitation always points to an earlier row: no cycle of any length can
-- form, and with the check below nobody invites themselves. First touch wins: a row names
-- an inviter or an ad link, never both.
--
-- Existing users get their row now, with no source: they started before this existed and
-- can never be attributed.
create table referral_codes (
    user_id     bigint primary key references users (telegram_id),
    code        text not null unique check (code ~ '^[a-z0-9]{6,16}$'),
    created_at  timestamptz not null default now()
);

create table ad_links (
    id          bigserial primary key,
    code        text not null unique check (code ~ '^[a-z0-9]{6,16}$'),
    name        text not null check (length(name) between 1 and 64),
    created_by  bigint not null,
    created_at  timestamptz not null default now(),
    operation_key text not null unique
);

create table user_origins (
    user_id     bigint primary key references users (telegram_id),
    started_at  timestamptz not null default now(),
    invited_by  bigint references user_origins (user_id),
    ad_link_id  bigint references ad_links (id),
    check (invited_by <> user_id),
    check (invited_by is null or ad_link_id is null)
);
create index user_origins_invited_by on user_origins (invited_by) where invited_by is not null;
create index user_origins_ad_link on user_origins (ad_link_id, started_at)
    where ad_link_id is not null;

insert into user_origins (user_id, started_at) select telegram_id, created_at from users;

create function user_origins_written_once() returns trigger
language plpgsql as $$
begin
    raise exception 'a user''s origin is recorded once: % is refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger user_origins_no_update before update or delete on user_origins
    for each row execute function user_origins_written_once();

-- A payment that reaches 'finalized' queues its referral rewards, and one refunded after
-- that queues their clawback, in the payment's own transaction: the reward survives any
-- crash after the payment commits. Only payments of invited users queue anything; charges
-- from the balance (provider 'balance') were counted when the balance was topped up.
create function payments_referral_jobs() returns trigger
language plpgsql as $$
begin
    if new.provider = 'balance' or new.refused is not null then
        return null;
    end if;
    if new.status = 'finalized' and old.status <> 'finalized' then
        if exists (select 1 from user_origins o
                   where o.user_id = new.user_id and o.invited_by is not null) then
            insert into outbox (kind, dedup_key, payload)
            values ('referral.reward', 'referral:reward:' || new.id,
                    jsonb_build_object('payment_id', new.id))
            on conflict (dedup_key) do nothing;
        end if;
    elsif new.status = 'refunded' and old.status = 'finalized' then
        if exists (select 1 from outbox where dedup_key = 'referral:reward:' || new.id) then
            insert into outbox (kind, dedup_key, payload)
            values ('referral.clawback', 'referral:clawback:' || new.id,
                    jsonb_build_object('payment_id', new.id))
            on conflict (dedup_key) do nothing;
        end if;
    end if;
    return null;
end;
$$;

create trigger payments_referral_jobs after update of status on payments
    for each row execute function payments_referral_jobs();
