-- Traffic top-ups, traffic reminders and device resets.
--
-- A traffic top-up is bought as a balance top-up (purpose 'topup') that carries an order:
-- `finalize_charge` credits it exactly once, as any top-up, and the trigger below spends
-- it on the order in the same transaction, when the payment reaches 'finalized'. The
-- order's `grant_key` in the audit log makes the credit happen once whatever calls it;
-- `finalize_charge` is not changed.

create table traffic_orders (
    payment_id       uuid primary key references payments (id),
    subscription_id  bigint not null references subscriptions (id),
    package          text not null check (length(package) between 1 and 32),
    bytes            bigint not null check (bytes > 0),
    keep_as_balance  boolean not null,
    -- true: the price is in the balance currency, so a payment whose subscription ended
    -- meanwhile stays on the balance; false: it is recorded as an unapplied top-up
    activation_attempts integer not null check (activation_attempts >= 1)
);

-- One row per credited top-up; the sum for a subscription's current period raises the
-- account's limit (`AccountSpec.traffic_limit_bytes`) until the next period starts.
create table traffic_topups (
    id                 bigserial primary key,
    user_id            bigint not null references users (telegram_id),
    subscription_id    bigint not null references subscriptions (id),
    period_started_at  timestamptz,
    -- null: not applied (the subscription had ended when the payment arrived)
    bytes              bigint not null check (bytes > 0),
    package            text not null,
    payment_id         uuid unique references payments (id),
    grant_key          text not null unique,
    created_at         timestamptz not null default now()
);
create index traffic_topups_period on traffic_topups (subscription_id, period_started_at);

-- A traffic reminder once per subscription, period and threshold (percent of the limit).
create table traffic_reminders (
    subscription_id    bigint not null references subscriptions (id),
    period_started_at  timestamptz not null,
    threshold          integer not null check (threshold between 1 and 100),
    sent_at            timestamptz not null default now(),
    primary key (subscription_id, period_started_at, threshold)
);

-- The last time a user reset a subscription's devices: the cool-down is one conditional
-- upsert on this row.
create table device_resets (
    subscription_id  bigint primary key references subscriptions (id),
    last_reset_at    timestamptz not null
);

create function limits_credit_traffic(p_payment uuid) returns text
language plpgsql as $$
declare
    ord traffic_orders;
    pay payments;
    sub subscriptions;
    audit_id bigint;
    applied boolean;
begin
    select * into ord from traffic_orders o where o.payment_id = p_payment;
    if not found then
        return 'no_order';
    end if;
    select * into pay from payments p where p.id = p_payment;
    select * into sub from subscriptions s where s.id = ord.subscription_id for update;
    applied := sub.status = 'active' and sub.expires_at > now();
    if not applied and ord.keep_as_balance then
        return 'kept_as_balance';  -- finalize_charge's top-up stands, and its message
    end if;
    insert into audit_log (actor, user_id, action, grant_key, details)
    values ('user:' || pay.user_id, pay.user_id, 'traffic_topup', 'traffic:' || p_payment,
            jsonb_build_object('bytes', ord.bytes, 'package', ord.package,
                               'subscription_id', sub.id, 'payment_id', p_payment,
                               'applied', applied))
    on conflict (grant_key) do nothing
    returning id into audit_id;
    if audit_id is null then
        return 'duplicate';
    end if;
    -- the top-up finalize_charge just credited is spent on the traffic
    update users u set balance_minor = u.balance_minor - pay.amount_minor, updated_at = now()
    where u.telegram_id = pay.user_id;
    insert into traffic_topups (user_id, subscription_id, period_started_at, bytes, package,
                                payment_id, grant_key)
    values (pay.user_id, sub.id, case when applied then sub.period_started_at end, ord.bytes,
            ord.package, p_payment, 'traffic:' || p_payment);
    if applied then
        insert into outbox (kind, dedup_key, payload, max_attempts)
        values ('vpn.activate', 'activate:' || sub.id || ':traffic:' || p_payment,
                jsonb_build_object('subscription_id', sub.id), ord.activation_attempts)
        on conflict (dedup_key) do nothing;
    end if;
    insert into outbox (kind, dedup_key, payload)
    values ('telegram.notify', 'notify:payment:' || p_payment,
            jsonb_build_object(
                'chat_id', pay.user_id,
                'template', case when applied then 'limits_traffic_added'
                                 else 'limits_traffic_unapplied' end,
                'params', jsonb_build_object(
                    'amount_minor', pay.amount_minor,
                    'currency', pay.currency,
                    'gb', ord.bytes / 1073741824,
                    'subscription_id', sub.id)))
    on conflict (dedup_key) do nothing;
    return case when applied then 'credited' else 'unapplied' end;
end
$$;

create function limits_payment_finalized() returns trigger
language plpgsql as $$
begin
    perform limits_credit_traffic(new.id);
    return null;
end
$$;

create trigger payments_traffic_order after update of status on payments
    for each row when (new.status = 'finalized' and old.status is distinct from 'finalized'
                       and new.purpose = 'topup')
    execute function limits_payment_finalized();
