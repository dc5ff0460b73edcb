-- Users whose study data was erased (their account was deleted). Writes for them are refused,
-- so a session that stays valid for a moment after the deletion leaves nothing behind. Each
-- write takes the user's lock shared and the erasure takes it alone (see the study store).
CREATE TABLE study.erased_users (
    user_id   uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
