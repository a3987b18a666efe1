-- Up Migration
-- A wave's silos are taken before its other tenants (rollout/runner.ts, db/rollouts.ts
-- `pendingTenants`): each needs a session of its own, the slowest part of a tenant's migration, so
-- they run while the wave's pool tenants are settled and never make a tail at the wave's end. The
-- claim's order is this index's, so a claim reads only the rows it takes.
-- compatible: an index only makes statements faster, never changes what they do. An earlier build
-- still running in a rolling deploy keeps claiming correctly: its filter is this index's leading
-- columns, and its order (slug only) sorts the wave's pending rows instead of reading them in order.
DROP INDEX rollout_tenants_work;
CREATE INDEX rollout_tenants_work ON rollout_tenants (rollout_id, wave, status, (tier <> 'silo'), slug);
