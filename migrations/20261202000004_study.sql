-- The study domain: each reader's highlights, notes, bookmarks and reading progress, anchored to
-- passages of the scripture graph by id (`john.3.16`; chapters `ps.119`). The study subgraph
-- checks every id against the graph before writing; rows name their user by GospeLib user id
-- (no foreign key: accounts owns users, and a deleted user's rows are erased by the consumer
-- of `user.deleted`). Every read and write names the user: an item is its owner's alone.

-- A highlighted verse; a verse may have several highlights.
CREATE TABLE study.highlights (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    passage_id text NOT NULL,
    -- 8 doctrinal colours, then 4 personal ones (`HighlightColor::as_db`).
    color      text NOT NULL CHECK (color IN (
                   'faith', 'repentance', 'baptism', 'holy_ghost', 'enduring', 'christ',
                   'covenant', 'prophecy',
                   'personal_yellow', 'personal_green', 'personal_blue', 'personal_pink')),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A verse's highlights (the Passage entity's batched look-up).
CREATE INDEX highlights_by_passage ON study.highlights (user_id, passage_id);
-- The user's list, newest first (keyset pages).
CREATE INDEX highlights_by_time ON study.highlights (user_id, created_at DESC, id DESC);

-- A note on a verse or a range of verses. `start_order`/`end_order` are the canonical order
-- numbers of the range's ends (book × 1 000 000 + chapter × 1 000 + verse, across the whole
-- canon), so ranges compare and a verse finds the notes whose range covers it
-- (`start_order <= order AND end_order >= order`).
CREATE TABLE study.notes (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL,
    start_passage_id text NOT NULL,
    end_passage_id   text NOT NULL,
    start_order      bigint NOT NULL,
    end_order        bigint NOT NULL,
    -- The editor's JSON document (at most 100 KB, checked by the subgraph).
    body             jsonb NOT NULL,
    -- Its plain-text rendering, what full-text search reads.
    text             text NOT NULL,
    -- Other passages the note links to.
    links            text[] NOT NULL DEFAULT '{}',
    -- Optimistic concurrency: an update names the version it read and bumps it.
    version          integer NOT NULL DEFAULT 1,
    tsv              tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notes_range_ordered CHECK (end_order >= start_order),
    CONSTRAINT notes_text_length CHECK (char_length(text) <= 20000),
    CONSTRAINT notes_links_count CHECK (cardinality(links) <= 50),
    CONSTRAINT notes_body_is_object CHECK (jsonb_typeof(body) = 'object')
);
CREATE INDEX notes_by_range ON study.notes (user_id, start_order, end_order);
CREATE INDEX notes_by_time ON study.notes (user_id, created_at DESC, id DESC);
CREATE INDEX notes_search ON study.notes USING gin (tsv);

-- A bookmarked verse: at most one bookmark per verse and user.
CREATE TABLE study.bookmarks (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    passage_id text NOT NULL,
    label      text CHECK (char_length(label) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookmarks_one_per_passage UNIQUE (user_id, passage_id)
);
CREATE INDEX bookmarks_by_time ON study.bookmarks (user_id, created_at DESC, id DESC);

-- How far a user read in each chapter (the last report; `completed` stays once set).
CREATE TABLE study.reading_progress (
    user_id    uuid NOT NULL,
    chapter_id text NOT NULL,
    last_verse integer NOT NULL CHECK (last_verse >= 1),
    completed  boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, chapter_id)
);
CREATE INDEX reading_progress_by_time
    ON study.reading_progress (user_id, updated_at DESC, chapter_id DESC);

-- Every reading recorded; streaks (consecutive UTC days with reading) are computed from it,
-- never stored.
CREATE TABLE study.reading_history (
    id         bigserial PRIMARY KEY,
    user_id    uuid NOT NULL,
    chapter_id text NOT NULL,
    read_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reading_history_by_user ON study.reading_history (user_id, read_at);

-- The user events (`gl:events:users`) the study consumer has applied, by `event_id`: a
-- redelivered entry finds its id here and does nothing.
CREATE TABLE study.processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
