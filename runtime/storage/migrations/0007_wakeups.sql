-- Workers are woken by the work itself instead of polling for it. Each change that gives a
-- worker something to do sends a notification on the channel vpnbot_wakeup, with the
-- worker's topic as its payload; a process's listener wakes the workers of that topic.
-- PostgreSQL delivers notifications when the transaction commits (a rolled back one sends
-- none) and folds identical ones of one transaction into one. The workers still look on
-- their own now and then: a notification is a hint, never the only way work is found.

-- New outbox jobs: one notification per kind per statement, however many rows it added.
create function outbox_wakeup_added() returns trigger language plpgsql as $$
begin
    perform pg_notify('vpnbot_wakeup', kind) from (select distinct kind from added) as kinds;
    return null;
end $$;

create trigger outbox_wakeup_added after insert on outbox
    referencing new table as added
    for each statement execute function outbox_wakeup_added();

-- Jobs due again at once: handed back untried, taken back by a restarted instance,
-- requeued by an operator. Claims, completions and retries after a backoff do not match.
create function outbox_wakeup_due() returns trigger language plpgsql as $$
begin
    perform pg_notify('vpnbot_wakeup', new.kind);
    return null;
end $$;

create trigger outbox_wakeup_due after update on outbox
    for each row
    when (new.status = 'pending' and new.claimed_by is null
          and (old.status <> 'pending' or old.claimed_by is not null)
          and new.next_attempt_at <= now())
    execute function outbox_wakeup_due();

-- An invoice the provider issued: the payment watcher polls open invoices from now on.
create function payments_wakeup_invoiced() returns trigger language plpgsql as $$
begin
    perform pg_notify('vpnbot_wakeup', 'payment.invoiced');
    return null;
end $$;

create trigger payments_wakeup_invoiced after insert or update of status on payments
    for each row when (new.status = 'invoiced')
    execute function payments_wakeup_invoiced();
