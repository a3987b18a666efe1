-- Up Migration
-- Credential rotation with alternating users (docs/credentials.md). One row per login group that has
-- rotated: a tenant's (subject = its id) or the pool's shared login (subject = 'pool'). It records the
-- login the group moved to, the one it left and until when that one keeps working (its grace period),
-- and when a retire ended it. The secret is where the current login and password are; this row is
-- what the schedule, the next rotation and drift read about the rotation itself.
-- Expand-only: an earlier build ignores the table and the index.
CREATE TABLE login_rotations (
  subject        text PRIMARY KEY,
  tenant_id      uuid REFERENCES tenants (id),
  login_group    text NOT NULL,
  current_login  text NOT NULL,
  previous_login text,
  rotated_at     timestamptz NOT NULL,
  grace_until    timestamptz,
  retired_at     timestamptz,
  operation_id   text NOT NULL,
  CHECK ((subject = 'pool') = (tenant_id IS NULL))
);
-- The grace periods to end: what the scheduler's retire pass looks for at every tick.
CREATE INDEX login_rotations_to_retire ON login_rotations (grace_until)
  WHERE retired_at IS NULL AND previous_login IS NOT NULL;

-- The pool's shared login is every pool tenant's: at most one rotation of it queued or running, whatever
-- pool tenant its operation is recorded on (a tenant's own rotations are already one at a time).
CREATE UNIQUE INDEX operations_one_active_pool_rotation ON operations ((params ->> 'group'))
  WHERE kind = 'rotate' AND status IN ('queued', 'running') AND (params ->> 'subject') = 'pool';
