-- How much each user keeps in study (highlights, notes and their bytes, bookmarks), so a write
-- past the user's quota is refused without counting rows. Triggers keep the counts on every
-- write, whoever makes it (the subgraph, a bulk load, an erasure); the quota itself is checked
-- only where the subgraph's writes set it (`study.max_*`, transaction-local settings: see
-- `Store::begin_write`), so bulk loads and maintenance are not limited.
CREATE TABLE study.usage (
    user_id    uuid PRIMARY KEY,
    highlights integer NOT NULL DEFAULT 0,
    notes      integer NOT NULL DEFAULT 0,
    -- A note's text and its body's JSON text, in bytes (`study.note_bytes`).
    note_bytes bigint NOT NULL DEFAULT 0,
    bookmarks  integer NOT NULL DEFAULT 0
);

-- What a note weighs against the quota.
CREATE FUNCTION study.note_bytes(text text, body jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN octet_length(text)::bigint + octet_length(body::text);

-- The users of `users` past the quota named `setting` (a transaction-local setting holding
-- the most allowed; unset or empty: no quota) on the counter `counter`: refused with SQLSTATE
-- `GLQ01`, the detail naming the counter and the limit.
CREATE FUNCTION study.enforce_quota(users uuid[], counter text, setting text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    most bigint := nullif(current_setting(setting, true), '')::bigint;
    over boolean;
BEGIN
    IF most IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM study.usage WHERE user_id = ANY($1) AND %I > $2)',
                   counter)
        INTO over USING users, most;
    IF over THEN
        RAISE EXCEPTION 'study quota exceeded: % (at most %)', counter, most
            USING ERRCODE = 'GLQ01', DETAIL = counter, HINT = most::text;
    END IF;
END $$;

-- Highlights and bookmarks: one counter each, one row per item.
CREATE FUNCTION study.count_items() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counter text := TG_ARGV[0];
    changed uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            'INSERT INTO study.usage AS u (user_id, %1$I)
             SELECT user_id, count(*) FROM added GROUP BY user_id
             ON CONFLICT (user_id) DO UPDATE SET %1$I = u.%1$I + EXCLUDED.%1$I', counter);
        SELECT array_agg(DISTINCT user_id) INTO changed FROM added;
        PERFORM study.enforce_quota(changed, counter, 'study.max_' || counter);
    ELSE
        EXECUTE format(
            'UPDATE study.usage AS u SET %1$I = u.%1$I - r.n
             FROM (SELECT user_id, count(*) AS n FROM removed GROUP BY user_id) AS r
             WHERE u.user_id = r.user_id', counter);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER highlights_added AFTER INSERT ON study.highlights
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION study.count_items('highlights');
CREATE TRIGGER highlights_removed AFTER DELETE ON study.highlights
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION study.count_items('highlights');
-- (An upsert that finds the bookmark updates it: only rows really inserted reach `added`.)
CREATE TRIGGER bookmarks_added AFTER INSERT ON study.bookmarks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION study.count_items('bookmarks');
CREATE TRIGGER bookmarks_removed AFTER DELETE ON study.bookmarks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION study.count_items('bookmarks');

-- Notes: a count and their bytes; an edit changes the bytes.
CREATE FUNCTION study.count_notes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    grown uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO study.usage AS u (user_id, notes, note_bytes)
        SELECT user_id, count(*), sum(study.note_bytes(text, body)) FROM added GROUP BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET notes = u.notes + EXCLUDED.notes, note_bytes = u.note_bytes + EXCLUDED.note_bytes;
        SELECT array_agg(DISTINCT user_id) INTO grown FROM added;
        PERFORM study.enforce_quota(grown, 'notes', 'study.max_notes');
        PERFORM study.enforce_quota(grown, 'note_bytes', 'study.max_note_bytes');
    ELSIF TG_OP = 'UPDATE' THEN
        WITH delta AS (
            SELECT user_id, sum(bytes) AS bytes FROM (
                SELECT user_id, study.note_bytes(text, body) AS bytes FROM added
                UNION ALL
                SELECT user_id, -study.note_bytes(text, body) FROM removed) AS d
            GROUP BY user_id),
        moved AS (
            UPDATE study.usage AS u SET note_bytes = u.note_bytes + delta.bytes
            FROM delta WHERE u.user_id = delta.user_id
            RETURNING u.user_id, delta.bytes)
        SELECT array_agg(user_id) FILTER (WHERE bytes > 0) INTO grown FROM moved;
        -- (An edit that shrinks a note is allowed even past a quota lowered since.)
        PERFORM study.enforce_quota(grown, 'note_bytes', 'study.max_note_bytes');
    ELSE
        UPDATE study.usage AS u
        SET notes = u.notes - r.n, note_bytes = u.note_bytes - r.bytes
        FROM (SELECT user_id, count(*) AS n, sum(study.note_bytes(text, body)) AS bytes
              FROM removed GROUP BY user_id) AS r
        WHERE u.user_id = r.user_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER notes_added AFTER INSERT ON study.notes
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION study.count_notes();
CREATE TRIGGER notes_changed AFTER UPDATE ON study.notes
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION study.count_notes();
CREATE TRIGGER notes_removed AFTER DELETE ON study.notes
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION study.count_notes();

-- TRUNCATE fires no DELETE trigger: the counts it empties go with it.
CREATE FUNCTION study.zero_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'notes' THEN
        UPDATE study.usage SET notes = 0, note_bytes = 0 WHERE notes <> 0 OR note_bytes <> 0;
    ELSE
        EXECUTE format('UPDATE study.usage SET %1$I = 0 WHERE %1$I <> 0', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER highlights_truncated AFTER TRUNCATE ON study.highlights
    FOR EACH STATEMENT EXECUTE FUNCTION study.zero_counts();
CREATE TRIGGER notes_truncated AFTER TRUNCATE ON study.notes
    FOR EACH STATEMENT EXECUTE FUNCTION study.zero_counts();
CREATE TRIGGER bookmarks_truncated AFTER TRUNCATE ON study.bookmarks
    FOR EACH STATEMENT EXECUTE FUNCTION study.zero_counts();

-- What users already keep.
INSERT INTO study.usage (user_id, highlights, notes, note_bytes, bookmarks)
SELECT user_id, sum(highlights), sum(notes), sum(note_bytes), sum(bookmarks)
FROM (
    SELECT user_id, count(*) AS highlights, 0 AS notes, 0 AS note_bytes, 0 AS bookmarks
    FROM study.highlights GROUP BY user_id
    UNION ALL
    SELECT user_id, 0, count(*), sum(study.note_bytes(text, body)), 0
    FROM study.notes GROUP BY user_id
    UNION ALL
    SELECT user_id, 0, 0, 0, count(*) FROM study.bookmarks GROUP BY user_id
) AS kept
GROUP BY user_id;
