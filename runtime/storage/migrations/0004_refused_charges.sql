-- A charge that moved money but bought nothing is kept as a payment of its own, status
-- 'paid', against the user who paid, so an admin can refund it to them: another amount or
-- currency than its intent ('mismatch'), a second charge for an intent already paid
-- ('extra_charge'), a payment by someone other than the intent's owner ('foreign_payer'),
-- a payment naming no intent of ours ('unknown_intent'). `paid_for` is the intent it
-- claimed to pay. Its unique (provider, external_id) makes another delivery of the same
-- charge a logged skip instead of a second alert.
alter table payments
    add column refused text
        check (refused in ('mismatch', 'extra_charge', 'foreign_payer', 'unknown_intent')),
    add column paid_for uuid references payments (id),
    drop constraint payments_purpose_check,
    add constraint payments_purpose_check
        check (purpose in ('subscription', 'topup', 'renewal', 'unknown'));

-- Second charges recorded before `refused` existed: the only payments at rest in 'paid'.
update payments set refused = 'extra_charge' where status = 'paid';
