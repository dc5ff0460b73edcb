-- Sign-ins heard before their user. Svix does not keep a Clerk user's events in order, so a
-- `session.created` may arrive before the `user.created` it follows. Its time waits here (the
-- latest per Clerk user) and is applied, with its `user.signed_in` event, when the user is
-- created; `user.deleted` discards it. Rows whose user never arrives are forgotten by the
-- retention sweep (subgraphs/kit/src/retention.rs).
CREATE TABLE accounts.early_sign_ins (
    clerk_id     text PRIMARY KEY,
    signed_in_at timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX early_sign_ins_received_at ON accounts.early_sign_ins (received_at);
