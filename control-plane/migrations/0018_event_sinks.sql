-- Up Migration
-- Where each outside sink of the lifecycle events (an EventBridge bus: aws/eventbridge.ts) has got to
-- in the published order (docs/lifecycle.md, "EventBridge").
-- Expand-only: a new table an earlier build ignores.

-- One row per sink (`eventbridge:<bus>`). `delivered_seq` is the highest `seq` the sink has accepted,
-- every event before it included: the sink's publisher locks the row, sends what follows it in `seq`
-- order, and moves it past what was accepted in the same transaction. A crash between the send and the
-- commit sends those events again (at least once; receivers deduplicate on the event's id).
CREATE TABLE event_sinks (
  name          text PRIMARY KEY,
  delivered_seq bigint NOT NULL DEFAULT 0,
  last_error    text,
  last_error_at timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
