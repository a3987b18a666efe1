-- Up Migration
-- Drift detection: one row per sweep, its findings, and the per-tier / per-tenant policy.

CREATE TABLE drift_runs (
  id              text PRIMARY KEY,
  trigger         text NOT NULL CHECK (trigger IN ('schedule', 'api', 'manual')),
  requested_by    text,
  status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
  target          text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  finished_at     timestamptz,
  duration_ms     integer,
  tenants_checked integer NOT NULL DEFAULT 0,
  -- Tenants not judged (in mid-operation, provisioning, offboarding, failed), with the reason.
  skipped         jsonb NOT NULL DEFAULT '[]'::jsonb,
  -- Per tenant (or the platform): the reconcile operation, its outcome, what was repaired and what remains.
  remediation     jsonb NOT NULL DEFAULT '[]'::jsonb,
  summary         jsonb NOT NULL DEFAULT '{}'::jsonb,
  timings         jsonb NOT NULL DEFAULT '{}'::jsonb,
  error           text
);
CREATE INDEX drift_runs_recent ON drift_runs (created_at DESC, id DESC);
-- The latest finished sweep: what GET /v1/tenants/{slug}/drift and the findings gauge read.
CREATE INDEX drift_runs_latest_finished ON drift_runs (finished_at DESC) WHERE status = 'succeeded';
-- At most one sweep queued or running, enforced by the database (a second request gets the first).
CREATE UNIQUE INDEX drift_runs_one_pending ON drift_runs ((true)) WHERE status IN ('queued', 'running');

CREATE TABLE drift_findings (
  run_id      text NOT NULL REFERENCES drift_runs (id) ON DELETE CASCADE,
  seq         integer NOT NULL,
  tenant_id   uuid,
  tenant_slug text,
  resource    text NOT NULL,
  name        text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('missing', 'unexpected', 'changed')),
  field       text NOT NULL,
  desired     jsonb,
  actual      jsonb,
  category    text NOT NULL CHECK (category IN ('state', 'isolation', 'orphan')),
  -- open: reported; repaired: remediated and confirmed gone by a re-observe; unrepaired: still there after remediation.
  resolution  text NOT NULL DEFAULT 'open' CHECK (resolution IN ('open', 'repaired', 'unrepaired')),
  operation_id text,
  PRIMARY KEY (run_id, seq)
);
CREATE INDEX drift_findings_by_tenant ON drift_findings (tenant_id, run_id);

-- Policy levels: the global default (tier and tenant null), a tier, or a tenant. An unset mode inherits.
CREATE TABLE drift_policies (
  tier          text CHECK (tier IN ('pool', 'bridge', 'silo', 'account')),
  tenant_id     uuid REFERENCES tenants (id),
  mode          text CHECK (mode IN ('report', 'remediate')),
  ignore_fields text[] NOT NULL DEFAULT '{}',
  updated_at    timestamptz NOT NULL DEFAULT now(),
  updated_by    text,
  CHECK (tier IS NULL OR tenant_id IS NULL)
);
CREATE UNIQUE INDEX drift_policies_scope ON drift_policies (coalesce(tier, ''), coalesce(tenant_id::text, ''));
