-- A refused charge's alert is claimed in the database: the delivery that recorded the
-- refusal claims it, and when that delivery's COMMIT was lost (a failover) and its retry
-- found the charge "recorded already", the retry claims it instead of losing it. The token
-- is the claimer's: a claim whose own COMMIT was lost and is retried finds its token, and
-- knows the claim is its own.
alter table payments add column refusal_alerted_at timestamptz,
    add column refusal_alert_token uuid;

-- The refusals recorded before this migration were alerted, or their alert is long gone:
-- neither is sent again.
update payments set refusal_alerted_at = created_at where refused is not null;
