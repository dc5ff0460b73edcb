-- The notifications subgraph now forgets old rows by age (its `retention` module): the inbox
-- after a year, delivery attempts and finished jobs after 100 days. Each is found by the
-- column it is aged by.
CREATE INDEX notifications_created_at ON notifications.notifications (created_at);
CREATE INDEX deliveries_at ON notifications.deliveries (at);
CREATE INDEX delivery_jobs_done_at ON notifications.delivery_jobs (done_at)
    WHERE done_at IS NOT NULL;
