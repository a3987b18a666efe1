-- Up Migration
-- Fleet schema rollouts (docs/rollouts.md): a rollout ships a tenant-schema version to the fleet in
-- waves. `rollout_tenants` is its ledger: one row per tenant, the tenant's wave, status and result.
-- Each tenant's migration holds a `migrate` operation, so it never runs beside another operation of
-- the tenant (operations_one_active_per_tenant), and the lease reaper resumes it after a crash.
-- Expand-only: an earlier build ignores the new tables; the wider CHECKs only admit new values.

CREATE TABLE rollouts (
  id           text PRIMARY KEY,
  to_version   integer NOT NULL CHECK (to_version >= 1),
  status       text NOT NULL CHECK (status IN ('running', 'paused', 'completed', 'cancelled')),
  on_error     text NOT NULL CHECK (on_error IN ('pause', 'continue')),
  max_failures integer NOT NULL CHECK (max_failures >= 0),
  -- [{name, selector, parallelism}] as requested, plus what the runner records per wave (started/finished).
  waves        jsonb NOT NULL,
  current_wave integer NOT NULL DEFAULT 0,
  -- The pool's shared tables, migrated once before the first wave: {status, fromVersion, toVersion, ...}.
  platform     jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- The last pass comparing the ledger with the data-plane catalogs: {checkedAt, checked, mismatched[]}.
  verification jsonb NOT NULL DEFAULT '{}'::jsonb,
  pause_reason text,
  created_by   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  started_at   timestamptz,
  finished_at  timestamptz
);
-- At most one rollout running or paused, enforced by the database.
CREATE UNIQUE INDEX rollouts_one_open ON rollouts ((true)) WHERE status IN ('running', 'paused');
CREATE INDEX rollouts_recent ON rollouts (created_at DESC, id DESC);

CREATE TABLE rollout_tenants (
  rollout_id   text NOT NULL REFERENCES rollouts (id),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  slug         text NOT NULL,
  tier         text NOT NULL,
  wave         integer NOT NULL,
  status       text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'parked', 'skipped')),
  from_version integer NOT NULL,
  -- The version the tenant reached (its record once this rollout is done with it).
  version      integer NOT NULL,
  -- The `migrate` operation of the latest attempt.
  operation_id text,
  attempts     integer NOT NULL DEFAULT 0,
  -- Times the tenant was found busy with another operation and put back.
  deferrals    integer NOT NULL DEFAULT 0,
  not_before   timestamptz,
  error        text,
  note         text,
  started_at   timestamptz,
  finished_at  timestamptz,
  PRIMARY KEY (rollout_id, tenant_id)
);
-- The runner claims a wave's pending tenants in slug order.
CREATE INDEX rollout_tenants_work ON rollout_tenants (rollout_id, wave, status, slug);
CREATE INDEX rollout_tenants_page ON rollout_tenants (rollout_id, slug);

-- The version of the platform's shared tables (the pool), as the control plane last saw or made it:
-- a pool onboarding is recorded at this version, since its rows live in those tables.
CREATE TABLE platform_schema_versions (
  component  text PRIMARY KEY CHECK (component IN ('pool')),
  version    integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
  CHECK (kind IN ('onboard', 'offboard', 'promote', 'reconcile', 'migrate'));

-- A tenant behind the newest template version is reported as pending its rollout, not as drift.
ALTER TABLE drift_findings DROP CONSTRAINT drift_findings_category_check;
ALTER TABLE drift_findings ADD CONSTRAINT drift_findings_category_check
  CHECK (category IN ('state', 'isolation', 'orphan', 'pending-rollout'));
