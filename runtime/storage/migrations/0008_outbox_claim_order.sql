-- A claim reads the due jobs of one kind oldest first, (next_attempt_at, id), and stops at
-- its limit. With the id in the index the scan returns them in that order and the claim
-- reads only the rows it takes; without it every claim sorted the kind's whole backlog.
create index outbox_claim on outbox (kind, next_attempt_at, id) where status = 'pending';
drop index outbox_due;
