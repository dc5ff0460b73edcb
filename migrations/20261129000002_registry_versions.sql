-- The schema registry's published supergraph versions: immutable, numbered 1, 2, 3… in the
-- order they were published. A rollback is a new version carrying an older one's content.
CREATE TABLE registry.versions (
    number          integer PRIMARY KEY CHECK (number > 0),
    -- [{ "name", "url", "sdl" }] of every subgraph, as composed
    subgraphs       jsonb NOT NULL,
    supergraph      text NOT NULL,
    supergraph_hash text NOT NULL,
    api_schema      text NOT NULL,
    api_schema_hash text NOT NULL,
    -- { "<contract name>": "<contract supergraph SDL>" }
    contracts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    message         text NOT NULL DEFAULT '',
    -- Set when a failing check was overridden with `publish --force --reason`.
    forced_reason   text,
    -- The check report the version was published with (JSON, as `schema check --format json`).
    check_report    jsonb,
    rollback_of     integer REFERENCES registry.versions (number),
    published_at    timestamptz NOT NULL DEFAULT now()
);
