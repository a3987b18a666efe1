-- Up Migration
-- GET /v1/operations walks operations newest first, keyset-paginated on (created_at, id).
-- Expand-only: an earlier build never reads it.
CREATE INDEX operations_page ON operations (created_at DESC, id DESC);

-- A tenant by its slug, whatever its status (findTenantBySlug: every route naming a tenant). The
-- partial unique index tenants_live_slug cannot serve it (the lookup also finds offboarded tenants),
-- so it read the whole table: 0.6 ms at 10,000 tenants, growing with the registry.
-- Expand-only: an earlier build's statements only get faster.
CREATE INDEX tenants_by_slug ON tenants (slug, created_at DESC);
