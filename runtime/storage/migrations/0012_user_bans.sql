-- An admin's ban: a banned user is told once (a notification queued with the ban) and
-- the bot ignores everything else they send, except payments: money is never lost.
alter table users add column banned_at timestamptz;
