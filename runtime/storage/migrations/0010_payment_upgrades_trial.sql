-- Crediting a purchase during a trial upgrades the trial; the activation job names the
-- payment it does.
--
-- `finalize_charge` as in 0009_finalize_charge.sql, with two changes:
-- - a purchase by a user with no active paid subscription on the plan's backend but an
--   active trial there turns that trial into the paid subscription (kind 'paid', the
--   plan's id), extended from max(now, the trial's end): one account, one link, and the
--   paid period added after the trial's time; a new traffic period starts now. Only
--   without either is a subscription created. (`subscriptions.extend_or_create` does the
--   same in Python.)
-- - the activation job's payload carries `payment_id`, so the access message that follows
--   the panel call is one per payment (`subscriptions.activation_succeeded`).
create or replace function finalize_charge(
    p_intent uuid,
    p_provider text,
    p_external_id text,
    p_amount bigint,
    p_currency text,
    p_payer bigint,
    p_plan_ids text[],
    p_terms_plan_ids text[],
    p_backends text[],
    p_durations interval[],
    p_activation_attempts integer
) returns table (
    verdict text,
    reason text,
    intent payments,
    recorded payments,
    subscription subscriptions,
    balance bigint
)
language plpgsql as $$
#variable_conflict use_column
declare
    owner_id bigint;
    pay payments;
    known payments;
    rec payments;
    sub subscriptions;
    own_invoice boolean;
    refusal text;
    why text;
    payer_id bigint;
    plan integer;
    new_balance bigint;
    expires text;
begin
    if p_intent is not null then
        select p.user_id into owner_id from payments p where p.id = p_intent;
    end if;

    if owner_id is null then
        -- no intent of ours: record the charge against its payer, when known
        select * into known from payments p
        where p.provider = p_provider and p.external_id = p_external_id;
        if found then
            if known.refused = 'unknown_intent' then
                return query select 'duplicate', 'recorded already: unknown_intent',
                    null::payments, null::payments, null::subscriptions, null::bigint;
            else
                return query select 'mismatch', 'this charge already paid another intent',
                    known, null::payments, null::subscriptions, null::bigint;
            end if;
            return;
        end if;
        if p_payer is null then
            return query select 'unknown_intent', 'no such intent',
                null::payments, null::payments, null::subscriptions, null::bigint;
            return;
        end if;
        insert into users (telegram_id) values (p_payer) on conflict do nothing;
        insert into payments (user_id, provider, external_id, amount_minor, currency, status,
                              purpose, paid_at, refused)
        values (p_payer, p_provider, p_external_id, p_amount, p_currency, 'paid', 'unknown',
                now(), 'unknown_intent')
        on conflict (provider, external_id) do nothing
        returning * into rec;
        if rec.id is null then
            return query select 'duplicate', 'recorded already: unknown_intent',
                null::payments, null::payments, null::subscriptions, null::bigint;
        else
            return query select 'unknown_intent', 'no such intent',
                null::payments, rec, null::subscriptions, null::bigint;
        end if;
        return;
    end if;

    perform 1 from users u where u.telegram_id = owner_id for update;
    select * into pay from payments p where p.id = p_intent for update;

    select * into known from payments p
    where p.provider = p_provider and p.external_id = p_external_id and p.id <> p_intent;
    if found then
        if known.paid_for is not distinct from pay.id then
            return query select 'duplicate', 'recorded already: ' || coalesce(known.refused, 'None'),
                pay, null::payments, null::subscriptions, null::bigint;
        else
            return query select 'mismatch', 'this charge already paid another intent',
                pay, null::payments, null::subscriptions, null::bigint;
        end if;
        return;
    end if;

    own_invoice := coalesce(pay.external_id = p_external_id, false);
    if pay.refused is not null and own_invoice then
        return query select 'duplicate', 'recorded already: ' || pay.refused,
            pay, null::payments, null::subscriptions, null::bigint;
        return;
    end if;

    if p_payer is not null and p_payer <> owner_id then
        refusal := 'foreign_payer';
        why := format('paid by user %s, the intent is user %s''s', p_payer, owner_id);
    elsif pay.provider <> p_provider or pay.currency <> p_currency
          or pay.amount_minor <> p_amount then
        refusal := 'mismatch';
    elsif pay.status in ('finalized', 'refunded') and own_invoice then
        return query select 'duplicate', 'already ' || pay.status,
            pay, null::payments, null::subscriptions, null::bigint;
        return;
    elsif pay.status in ('finalized', 'refunded', 'paid') then
        refusal := 'extra_charge';
        why := 'intent already paid by another charge';
    end if;

    if refusal is not null then
        payer_id := coalesce(p_payer, owner_id);
        if payer_id <> owner_id then
            insert into users (telegram_id) values (payer_id) on conflict do nothing;
        end if;
        if own_invoice then
            -- the intent's own invoice: the intent itself becomes the record, the payer's
            update payments p set status = 'paid', paid_at = now(), refused = refusal,
                                  user_id = payer_id
            where p.id = p_intent
            returning * into rec;
            return query select refusal, why, pay, rec, null::subscriptions, null::bigint;
            return;
        end if;
        insert into payments (user_id, provider, external_id, amount_minor, currency, status,
                              purpose, plan_id, paid_at, refused, paid_for)
        values (payer_id, p_provider, p_external_id, p_amount, p_currency, 'paid',
                pay.purpose, pay.plan_id, now(), refusal, pay.id)
        on conflict (provider, external_id) do nothing
        returning * into rec;
        if rec.id is null then  -- the same charge, recorded by a delivery that raced this one
            return query select 'duplicate', 'recorded already',
                pay, null::payments, null::subscriptions, null::bigint;
        else
            return query select refusal, why, pay, rec, null::subscriptions, null::bigint;
        end if;
        return;
    end if;

    if pay.purpose = 'topup' then
        update users u set balance_minor = u.balance_minor + pay.amount_minor, updated_at = now()
        where u.telegram_id = pay.user_id
        returning u.balance_minor into new_balance;
    else
        plan := array_position(p_plan_ids, pay.plan_id);
        if plan is null then
            raise exception 'no terms for plan % of payment %', pay.plan_id, pay.id
                using errcode = 'P0002';
        end if;
        select * into sub from subscriptions s
        where s.user_id = pay.user_id and s.vpn_backend = p_backends[plan]
          and s.kind = 'paid' and s.status = 'active'
        order by s.expires_at desc limit 1
        for update;
        if not found then
            -- a running trial on the plan's backend becomes the paid subscription: the
            -- same account and link, the paid time added after the trial's end
            select * into sub from subscriptions s
            where s.user_id = pay.user_id and s.vpn_backend = p_backends[plan]
              and s.kind = 'trial' and s.status = 'active'
            order by s.expires_at desc limit 1
            for update;
        end if;
        if found then
            update subscriptions s
            set expires_at = greatest(now(), s.expires_at) + p_durations[plan], kind = 'paid',
                plan_id = p_terms_plan_ids[plan], period_started_at = now(),
                activation_status = 'pending', next_attempt_at = now(),
                activation_attempts = 0, last_error = null, updated_at = now()
            where s.id = sub.id
            returning * into sub;
        else
            insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,
                                       vpn_backend, next_attempt_at)
            values (pay.user_id, p_terms_plan_ids[plan], 'paid', now(),
                    now() + p_durations[plan], p_backends[plan], now())
            returning * into sub;
            update subscriptions s set vpn_account = 'u' || pay.user_id || '_s' || sub.id
            where s.id = sub.id
            returning * into sub;
        end if;
        insert into outbox (kind, dedup_key, payload, max_attempts)
        values ('vpn.activate', 'activate:' || sub.id || ':payment:' || pay.id,
                jsonb_build_object('subscription_id', sub.id, 'payment_id', pay.id),
                p_activation_attempts)
        on conflict (dedup_key) do nothing;
        -- as Python's datetime.isoformat() writes it, in UTC
        expires := to_char(sub.expires_at at time zone 'UTC',
                           case when extract(microseconds from sub.expires_at)::bigint % 1000000 = 0
                                then 'YYYY-MM-DD"T"HH24:MI:SS'
                                else 'YYYY-MM-DD"T"HH24:MI:SS.US' end) || '+00:00';
    end if;

    -- through 'paid': payments_forward_only allows no shortcut
    update payments p set status = 'paid', external_id = p_external_id, paid_at = now()
    where p.id = p_intent;
    update payments p
    set status = 'finalized', finalized_at = now(), subscription_id = sub.id
    where p.id = p_intent
    returning * into rec;
    insert into outbox (kind, dedup_key, payload)
    values ('telegram.notify', 'notify:payment:' || pay.id,
            jsonb_build_object(
                'chat_id', pay.user_id,
                'template', case when new_balance is not null then 'topup_credited'
                                 else 'payment_received' end,
                'params', jsonb_build_object(
                    'amount_minor', pay.amount_minor,
                    'currency', pay.currency,
                    'balance_minor', new_balance,
                    'plan_id', pay.plan_id,
                    'expires_at', expires)))
    on conflict (dedup_key) do nothing;
    return query select 'credited', '', rec, null::payments, sub, new_balance;
end
$$;
