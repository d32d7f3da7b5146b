-- Access rules: who may register, the rules a user accepted, their channel membership as
-- last checked, and who asked to buy while purchases were paused.
--
-- `admitted_at`: the user passed registration (every user known before this migration
-- did). While registration is closed, a user who was never admitted is told so and
-- nothing else happens.
alter table users add column admitted_at timestamptz;
update users set admitted_at = created_at;
-- The version of the rules the user accepted (`access_rules.rules_version`).
alter table users add column rules_accepted integer;
alter table users add column rules_accepted_at timestamptz;
-- When getChatMember last found the user in the required channel.
alter table users add column channel_checked_at timestamptz;

-- One row per user who tried to buy while purchases were paused; `notified_at` is set in
-- the transaction that queues their "purchases are open again" message, so each is told
-- once, whichever instance starts first.
create table purchase_waitlist (
    user_id      bigint primary key references users (telegram_id),
    asked_at     timestamptz not null default now(),
    notified_at  timestamptz
);
create index purchase_waitlist_waiting on purchase_waitlist (asked_at) where notified_at is null;
