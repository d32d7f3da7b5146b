-- Intentionally empty: keeps the numbering contiguous.
select 1;
