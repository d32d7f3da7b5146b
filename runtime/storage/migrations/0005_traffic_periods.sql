-- Traffic is counted per paid period: the first purchase and every renewal start one, and
-- the VPN account's usage is reset for it. The account also records the period it was
-- last provisioned for: a re-activation within that period (days granted by an admin, a
-- refund) may find the period's traffic used up, which is no failed activation.
alter table subscriptions add column period_started_at timestamptz;
update subscriptions set period_started_at = starts_at;
alter table subscriptions
    alter column period_started_at set not null,
    alter column period_started_at set default now();
alter table subscriptions add column account_period_started_at timestamptz;
update subscriptions set account_period_started_at = period_started_at
    where activation_status in ('active', 'revoked');

-- Revoked accounts are deleted from their panel after a retention: revoked_at says since
-- when; 'deleting' means the deletion is queued, 'deleted' that it is done.
alter table subscriptions add column revoked_at timestamptz;
update subscriptions set revoked_at = updated_at where activation_status = 'revoked';
alter table subscriptions drop constraint subscriptions_activation_status_check;
alter table subscriptions add constraint subscriptions_activation_status_check
    check (activation_status in ('pending', 'active', 'failed', 'revoked', 'deleting', 'deleted'));
create index subscriptions_revoked on subscriptions (revoked_at)
    where activation_status = 'revoked';
