-- Up Migration
-- GET /v1/operations walks operations newest first, keyset-paginated on (created_at, id).
-- Expand-only: an earlier build never reads it.
CREATE INDEX operations_page ON operations (created_at DESC, id DESC);
