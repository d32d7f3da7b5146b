-- Promo codes and discounts.
--
-- A code is activated at most once per user and never past its limit, whatever races for
-- it: the activation row is unique per (code, user), and the count moves only by a
-- conditional update (`activations < max_activations`), backed by a check. What a code
-- grants commits in the activation's transaction, through the audit log's unique grant key
-- (`promo:<code id>:<user>`).
create table promo_codes (
    id                   bigserial primary key,
    code                 text not null unique check (code ~ '^[A-Z0-9_-]{3,32}$'),
    kind                 text not null
                         check (kind in ('days', 'balance', 'plan', 'discount', 'next_discount')),
    amount               bigint,
    plan_id              text check (length(plan_id) between 1 and 32),
    max_activations      integer check (max_activations > 0),
    activations          integer not null default 0 check (activations >= 0),
    valid_from           timestamptz,
    valid_until          timestamptz,
    new_users_only       boolean not null default false,
    without_subscription boolean not null default false,
    disabled_at          timestamptz,
    created_by           text not null check (length(created_by) between 1 and 64),
    created_at           timestamptz not null default now(),
    check (activations <= max_activations),
    check (valid_until > valid_from),
    check ((kind = 'plan') = (plan_id is not null)),
    check (case kind
               when 'days' then amount between 1 and 3660
               when 'balance' then amount between 1 and 1000000000000
               when 'plan' then amount is null
               else amount between 1 and 99
           end)
);

create table promo_activations (
    code_id      bigint not null references promo_codes (id),
    user_id      bigint not null references users (telegram_id),
    activated_at timestamptz not null default now(),
    primary key (code_id, user_id)
);

-- A personal discount applies to every purchase; a code raises it, an admin sets it.
create table promo_personal_discounts (
    user_id    bigint primary key references users (telegram_id),
    percent    smallint not null check (percent between 1 and 99),
    source     text not null check (length(source) between 1 and 64),
    updated_at timestamptz not null default now()
);

-- A next-purchase discount is used up by the one purchase that is credited with it.
create table promo_next_discounts (
    id         bigserial primary key,
    user_id    bigint not null references users (telegram_id),
    percent    smallint not null check (percent between 1 and 99),
    source     text not null check (length(source) between 1 and 64),
    created_at timestamptz not null default now(),
    used_by    uuid unique references payments (id),
    used_at    timestamptz,
    check ((used_by is null) = (used_at is null))
);
create index promo_next_discounts_unused on promo_next_discounts (user_id) where used_by is null;

-- What a discounted intent was priced from: the list price, the percent taken off and
-- where it came from (`personal:<origin>` or `next_purchase:<origin>`).
alter table payments
    add column original_amount_minor bigint,
    add column discount_percent smallint check (discount_percent between 1 and 99),
    add column discount_source text
        check (discount_source ~ '^(personal|next_purchase):' and length(discount_source) <= 80),
    add column next_discount_id bigint references promo_next_discounts (id),
    add constraint payments_discount_whole check (
        (original_amount_minor is null) = (discount_percent is null)
        and (discount_percent is null) = (discount_source is null)
        and (original_amount_minor is null or original_amount_minor > amount_minor)
    ),
    add constraint payments_next_discount_source check (
        next_discount_id is null or discount_source like 'next_purchase:%'
    );

-- One next-purchase discount prices one payment at a time: a newer intent takes it over
-- (the older one is priced back to its list price in the same transaction, so it can no
-- longer be paid at the discount), and a credited or refunded payment keeps it for good.
-- So at most one purchase is ever credited with it, whatever is paid concurrently.
create unique index payments_next_discount on payments (next_discount_id)
    where next_discount_id is not null;

-- A purchase credited with a next-purchase discount marks it used, in the crediting
-- transaction (a balance payment is inserted finalized; an invoice reaches finalized).
create function promo_next_discount_used() returns trigger language plpgsql as $$
begin
    update promo_next_discounts set used_by = new.id, used_at = now()
    where id = new.next_discount_id and used_by is null;
    if not found then
        raise exception 'next-purchase discount % is used already', new.next_discount_id
            using errcode = 'unique_violation';
    end if;
    return null;
end;
$$;

create trigger payments_next_discount_used_insert after insert on payments
    for each row when (new.status = 'finalized' and new.next_discount_id is not null)
    execute function promo_next_discount_used();
create trigger payments_next_discount_used_update after update of status on payments
    for each row when (new.status = 'finalized' and old.status <> 'finalized'
                       and new.next_discount_id is not null)
    execute function promo_next_discount_used();
