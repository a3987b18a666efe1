-- Up Migration
-- Tenantry control-plane schema. Forward-only: never edit a released migration, add a new one.

CREATE TABLE tenants (
  id               uuid PRIMARY KEY,
  slug             text NOT NULL CHECK (slug ~ '^[a-z][a-z0-9-]{2,39}$'),
  name             text NOT NULL,
  tier             text NOT NULL CHECK (tier IN ('pool', 'bridge', 'silo', 'account')),
  status           text NOT NULL CHECK (status IN ('provisioning', 'active', 'failed', 'offboarding', 'offboarded')),
  region           text,
  plan             text,
  contact_email    text,
  template_version integer NOT NULL,
  outputs          jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
-- A slug names one live tenant; an offboarded tenant's slug may be reused.
CREATE UNIQUE INDEX tenants_live_slug ON tenants (slug) WHERE status <> 'offboarded';
CREATE INDEX tenants_page ON tenants (created_at, id);

CREATE TABLE operations (
  id               text PRIMARY KEY,
  kind             text NOT NULL CHECK (kind IN ('onboard', 'offboard', 'promote', 'reconcile')),
  tenant_id        uuid NOT NULL REFERENCES tenants (id),
  status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  steps            jsonb NOT NULL DEFAULT '[]'::jsonb,
  params           jsonb NOT NULL DEFAULT '{}'::jsonb,
  error            text,
  attempts         integer NOT NULL DEFAULT 0,
  lease_owner      text,
  lease_expires_at timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz
);
-- At most one operation in flight per tenant, enforced by the database.
CREATE UNIQUE INDEX operations_one_active_per_tenant ON operations (tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX operations_by_tenant ON operations (tenant_id, created_at DESC);
CREATE INDEX operations_leases ON operations (lease_expires_at) WHERE status = 'running';

CREATE TABLE api_tokens (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  role        text NOT NULL CHECK (role IN ('sales-ops', 'sre', 'dataplane', 'admin')),
  token_hash  bytea NOT NULL UNIQUE,
  created_by  text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

CREATE TABLE audit_log (
  id           bigserial PRIMARY KEY,
  at           timestamptz NOT NULL DEFAULT now(),
  actor_id     text,
  actor_name   text,
  role         text,
  action       text NOT NULL,
  tenant_id    uuid,
  tenant_slug  text,
  request_id   text,
  operation_id text,
  details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);

-- The audit trail is append-only, even for the control plane itself.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE idempotency_keys (
  token_id     text NOT NULL,
  key          text NOT NULL,
  request_hash text NOT NULL,
  status_code  integer NOT NULL,
  response     jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (token_id, key)
);

-- Local stand-ins for KMS and Secrets Manager (envelope encryption; the root key lives in the data directory).
CREATE TABLE local_keys (
  key_id       text PRIMARY KEY,
  alias        text NOT NULL,
  tenant_id    uuid,
  wrapped_key  bytea,
  state        text NOT NULL CHECK (state IN ('enabled', 'destroyed')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz,
  CHECK ((state = 'enabled') = (wrapped_key IS NOT NULL))
);
-- An alias names one live key; a shredded key keeps its row (for the record) but frees the alias.
CREATE UNIQUE INDEX local_keys_live_alias ON local_keys (alias) WHERE state = 'enabled';

CREATE TABLE local_secrets (
  name        text NOT NULL,
  version     integer NOT NULL,
  key_id      text NOT NULL REFERENCES local_keys (key_id),
  ciphertext  bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);
