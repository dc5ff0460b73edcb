-- A user's profile and device changes of the last day are counted on every `updateMe` and
-- new device (`MAX_CHANGES_PER_DAY`): this index finds them without reading every event of
-- the user the outbox keeps. It also serves what `outbox_user_id` served (a user's events),
-- which it replaces.
CREATE INDEX outbox_user_recent ON accounts.outbox ((payload->>'user_id'), created_at);
DROP INDEX accounts.outbox_user_id;
