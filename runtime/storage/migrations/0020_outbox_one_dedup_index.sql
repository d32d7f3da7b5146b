-- The outbox's dedup keys had two indexes: the unique constraint (equality, for ON CONFLICT)
-- and one with text_pattern_ops (a broadcast's jobs by key prefix). One unique index with
-- text_pattern_ops serves both: its equality is the same, and ON CONFLICT (dedup_key)
-- infers a unique index whatever its operator class. Every enqueued job, and every claim
-- and completion (neither can be a HOT update), wrote an entry into both.
create unique index outbox_dedup_key on outbox (dedup_key text_pattern_ops);
alter table outbox drop constraint outbox_dedup_key_key;
drop index outbox_dedup_key_prefix;
