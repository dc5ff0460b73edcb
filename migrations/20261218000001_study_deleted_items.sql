-- Items their owner deleted, by id: a create sent again with a deleted item's id (an offline
-- client's queued retry arriving after the delete) is refused instead of bringing the item
-- back. Forgotten after the retention's 100 days; a deleted account's go with its data.
CREATE TABLE study.deleted_items (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_items_by_user ON study.deleted_items (user_id);
CREATE INDEX deleted_items_by_time ON study.deleted_items (deleted_at);

-- What a highlight or note was created with (SHA-256 of the create's content): the same id
-- sent again with other content is refused rather than answered with the first. Null for
-- items made before, which any retry matches.
ALTER TABLE study.highlights ADD COLUMN created_with bytea;
ALTER TABLE study.notes ADD COLUMN created_with bytea;
