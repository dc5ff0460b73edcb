-- Partner API keys: only each key's sha256 is kept (the key itself is shown once, when it is
-- made). Routers look keys up by digest; revoking sets `revoked_at` (the row stays, for audit).
CREATE TABLE accounts.partner_keys (
    id          text PRIMARY KEY,
    digest      text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    partner     text NOT NULL,
    scopes      text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
