-- The name a user shows in Telegram (first and last name), kept so an admin can find a
-- user by name. Written when it changes, like the username.
alter table users add column display_name text check (length(display_name) <= 256);
create index users_display_name on users (lower(display_name) text_pattern_ops)
    where display_name is not null;
