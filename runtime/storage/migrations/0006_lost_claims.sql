-- A claim that ends with no outcome (its claimer died) is a lost claim, counted apart from
-- the attempts, which count failures: a restart costs a job no attempt, while a job that
-- keeps killing its worker is still dead-lettered once it has lost max_attempts claims.
alter table outbox add column lost_claims integer not null default 0;
-- Every claim of a job, lost or not: with the owner, the fencing token of a claim (the
-- attempts cannot be one any more: a lost claim gives its attempt back).
alter table outbox add column claims integer not null default 0;
update outbox set claims = attempts where status = 'pending' and attempts > 0;
-- When the current claim's work started: a claimer that takes a batch and works through
-- it marks each job as it starts, so only a job it was working on counts a lost claim.
alter table outbox add column started_at timestamptz;
-- How many of a job's steps are done (the messages of a notification), so a job that runs
-- again after a crash resumes after them instead of repeating them.
alter table outbox add column steps_done integer not null default 0;

alter table telegram_updates add column lost_claims integer not null default 0;
