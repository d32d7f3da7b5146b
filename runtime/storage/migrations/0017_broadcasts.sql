-- Targeted broadcasts with media and buttons, stoppable, and deletable once sent.
--
-- The audience is a named segment (a predicate on users, see runtime/storage/broadcasts.py)
-- with an optional argument (a plan id, a language). The content is HTML text or a
-- caption, with an optional photo, video, animation or document (the file_id Telegram gave
-- the admin's upload) and optional buttons. The visible length (after HTML parsing) is
-- checked by the code; the database bounds the raw text.
alter table broadcasts drop constraint broadcasts_audience_check;
alter table broadcasts add constraint broadcasts_audience_check
    check (audience ~ '^[a-z_]{1,32}$');
alter table broadcasts add column audience_arg text check (length(audience_arg) between 1 and 64);
alter table broadcasts drop constraint broadcasts_text_check;
alter table broadcasts add column html boolean not null default false;
alter table broadcasts add column media_kind text
    check (media_kind in ('photo', 'video', 'animation', 'document'));
alter table broadcasts add column media_file_id text check (length(media_file_id) between 1 and 256);
alter table broadcasts add column buttons jsonb not null default '[]'::jsonb;
alter table broadcasts add constraint broadcasts_content check (
    (media_kind is null) = (media_file_id is null)
    and length(text) <= 16384
    and (media_kind is not null or length(text) >= 1)
);
-- The admin's command that created the draft (its update): a handler run twice creates
-- one draft.
alter table broadcasts add column operation_key text unique check (length(operation_key) <= 100);
alter table broadcasts add column cancelled integer not null default 0;
-- When an admin asked to delete the sent messages: the deletions are outbox jobs
-- ('broadcast:del:<id>:<user>'), one per message recorded as sent.
alter table broadcasts add column deletion_requested_at timestamptz;

-- What a job's side effect produced, written with its completion in the same statement
-- (the message id of a broadcast message, which its deletion needs).
alter table outbox add column result jsonb;
