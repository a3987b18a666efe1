-- Up Migration
-- `rotate` operations (credential and key rotation, docs/credentials.md). After 0013, which set the
-- list before: every kind so far, and `rotate`. Expand-only: the wider CHECK only admits a new value.
ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
  CHECK (kind IN ('onboard', 'offboard', 'promote', 'reconcile', 'migrate', 'rotate'));
