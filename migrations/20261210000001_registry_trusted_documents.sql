-- Trusted documents: the manifest of the first-party apps' operations published with each
-- version (`{ "format": "trusted-documents/1", "documents": { "sha256:<hex>": "<text>" } }`),
-- which routers in `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce` hold app callers to. Versions
-- published before it have none (NULL).
ALTER TABLE registry.versions ADD COLUMN trusted_documents jsonb;
