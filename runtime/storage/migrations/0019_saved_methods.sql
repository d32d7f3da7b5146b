-- Saved payment methods for auto-renewal, and the card charges of renewal periods.
--
-- A method is saved only from a credited payment whose intent carried the user's consent
-- (`payments.save_method`, an explicit choice in the bot). A user has at most one method
-- in use; removing it (or the provider reporting it unusable) revokes it for good: the
-- row stays, so a late delivery of the payment that saved it cannot bring it back.
--
-- A renewal charge is keyed by (subscription, period): the period is the expiry being
-- renewed, in unix seconds, so at most one charge per period exists whatever the number
-- of processes. Its intent (a `payments` row, purpose 'renewal') is stored in the same
-- transaction, before the provider is called; the claim lets a charge whose process died
-- be tried again, with the same intent and idempotence key, once the claim expires.

alter table payments add column save_method boolean not null default false;

create table saved_payment_methods (
    id                 bigserial primary key,
    user_id            bigint not null references users (telegram_id),
    provider           text not null,
    method_ref         text not null check (length(method_ref) between 1 and 128),
    title              text not null check (length(title) <= 64),
    consent_payment_id uuid references payments (id),
    created_at         timestamptz not null default now(),
    revoked_at         timestamptz,
    revoked_reason     text,
    unique (provider, method_ref)
);
create unique index saved_payment_methods_in_use on saved_payment_methods (user_id)
    where revoked_at is null;

create table renewal_charges (
    subscription_id  bigint not null references subscriptions (id),
    period           bigint not null,
    payment_id       uuid not null unique references payments (id),
    method_id        bigint not null references saved_payment_methods (id),
    status           text not null default 'charging'
                     check (status in ('charging', 'pending', 'succeeded', 'failed', 'refused')),
    reason           text,
    claim_expires_at timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (subscription_id, period)
);
