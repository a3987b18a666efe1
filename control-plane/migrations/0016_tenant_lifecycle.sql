-- Up Migration
-- Day two of a tenant (docs/lifecycle.md): its version (the ETag a PATCH's If-Match names), labels,
-- limit overrides and suspension; the `suspended` status; and the lifecycle operations `update`,
-- `suspend`, `reactivate` and `export`.
-- compatible: an earlier build ignores the new columns (each has a default) and never writes the new
-- status or kinds; the wider CHECKs only admit new values, after 0015, which set the kinds before.

ALTER TABLE tenants ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE tenants ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE tenants ADD COLUMN limits jsonb NOT NULL DEFAULT '{}'::jsonb;
-- {reason, note, at, by} while suspended, else NULL.
ALTER TABLE tenants ADD COLUMN suspension jsonb;

-- Rollouts and the CLI select tenants by their labels (labels @> '{"k": "v"}').
CREATE INDEX tenants_labels ON tenants USING gin (labels jsonb_path_ops);

ALTER TABLE tenants DROP CONSTRAINT IF EXISTS tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
  CHECK (status IN ('provisioning', 'active', 'failed', 'offboarding', 'offboarded', 'suspended'));

ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
  CHECK (kind IN ('onboard', 'offboard', 'promote', 'reconcile', 'migrate', 'rotate',
                  'update', 'suspend', 'reactivate', 'export'));
