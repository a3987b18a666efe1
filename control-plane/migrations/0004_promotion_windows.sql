-- Up Migration
-- Promotions whose source placement is still kept for rollback: the cleanup sweep (every minute)
-- and offboarding look them up.
CREATE INDEX operations_open_promotion_windows ON operations (tenant_id)
  WHERE kind = 'promote' AND status = 'succeeded' AND NOT (params ? 'rollbackOf')
    AND NOT (progress ? 'cleanedUp') AND NOT (progress ? 'rolledBack');

-- Failed operations kept to be resumed (POST /v1/operations/{id}/resume); while a promotion is
-- one of them, no other operation may start on its tenant.
CREATE INDEX operations_resumable ON operations (tenant_id)
  WHERE status = 'failed' AND (progress ->> 'resumable') = 'true';
