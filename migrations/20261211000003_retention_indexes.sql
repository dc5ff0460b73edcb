-- Rows kept only to recognise repeats (applied deliveries and events) or as history (published
-- outbox events) are forgotten after a while (subgraphs/kit/src/retention.rs): these indexes
-- let its hourly sweep find the old ones without reading whole tables.
CREATE INDEX processed_user_events_processed_at ON billing.processed_user_events (processed_at);
CREATE INDEX processed_events_processed_at ON study.processed_events (processed_at);
CREATE INDEX outbox_published_at ON accounts.outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_published_at ON billing.outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_published_at ON notifications.outbox (published_at) WHERE published_at IS NOT NULL;
