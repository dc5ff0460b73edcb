-- The deletions remembered for each user are counted (`study.usage.deleted_items`, kept by the
-- same triggers as the other counts), so that each delete can forget the user's oldest past
-- `Quota::remembered_deletions`: creating and deleting in a loop would otherwise add a row
-- per cycle for the retention's 100 days, outside every quota.
-- Deletions committed while the counts are taken would go uncounted.
LOCK TABLE study.deleted_items IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE study.usage ADD COLUMN deleted_items integer NOT NULL DEFAULT 0;
INSERT INTO study.usage AS u (user_id, deleted_items)
    SELECT user_id, count(*) FROM study.deleted_items GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE SET deleted_items = EXCLUDED.deleted_items;
-- (No `study.max_deleted_items` is ever set: the count is never refused, only trimmed.)
CREATE TRIGGER deleted_items_added AFTER INSERT ON study.deleted_items
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION study.count_items('deleted_items');
CREATE TRIGGER deleted_items_removed AFTER DELETE ON study.deleted_items
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION study.count_items('deleted_items');
CREATE TRIGGER deleted_items_truncated AFTER TRUNCATE ON study.deleted_items
    FOR EACH STATEMENT EXECUTE FUNCTION study.zero_counts();
-- A user's oldest deletions, found in order.
CREATE INDEX deleted_items_by_user_and_time ON study.deleted_items (user_id, deleted_at, id);
DROP INDEX study.deleted_items_by_user;
