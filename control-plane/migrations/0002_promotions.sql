-- Up Migration
-- Promotion progress (rows copied, replication lag, freeze window, deferred DDL) lives with its operation.
ALTER TABLE operations ADD COLUMN progress jsonb NOT NULL DEFAULT '{}'::jsonb;
