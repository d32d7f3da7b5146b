-- Intentionally empty: keeps the numbering contiguous until the migration of this
-- number lands.
select 1;
