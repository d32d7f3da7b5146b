-- The audit log: every admin action and every grant (trial, referral reward, promo code,
-- manual), who did it, when and why. Append-only: the database refuses to change or
-- delete a row, so the history an admin reads is the history that happened.
--
-- `grant_key` names a grant once and for all (e.g. `promo:<code>:<user>`,
-- `referral:<payment>:<level>`): a grant writes its row first and goes ahead only if the
-- row is new, so the unique key, not application checks, makes every grant happen once,
-- also under retries, concurrent requests and several processes.
create table audit_log (
    id                   bigserial primary key,
    at                   timestamptz not null default now(),
    actor                text not null check (length(actor) between 1 and 64),
    user_id              bigint references users (telegram_id),
    action               text not null check (length(action) between 1 and 64),
    grant_key            text unique check (length(grant_key) between 1 and 200),
    days                 integer,
    balance_delta_minor  bigint,
    reason               text check (length(reason) <= 500),
    details              jsonb not null default '{}'::jsonb
);

create index audit_log_user on audit_log (user_id, id desc) where user_id is not null;
create index audit_log_action_at on audit_log (action, at);

create function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'the audit log is append-only: % is refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_log_no_update before update or delete on audit_log
    for each row execute function audit_log_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_append_only();
