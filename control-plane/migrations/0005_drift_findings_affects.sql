-- Up Migration
-- Platform findings (pool tables, pool and owner roles, the shared database) name the tiers whose
-- tenants they affect: a pool tenant's drift view includes the pool's, marked as platform findings.
ALTER TABLE drift_findings ADD COLUMN affects text[];
CREATE INDEX drift_findings_platform ON drift_findings (run_id) WHERE tenant_id IS NULL;

