-- Up Migration
-- Lifecycle events, webhooks and tenant exports (docs/lifecycle.md).
-- Expand-only: new tables an earlier build ignores.

-- The outbox: each event is written in the transaction of the change it reports. `seq` is given when
-- the event is published (db/outbox.ts, one publisher at a time, after the change committed), so
-- the published order never has a gap a later commit fills: GET /v1/events?after=<seq> loses nothing.
CREATE TABLE events (
  n            bigserial PRIMARY KEY,
  id           text NOT NULL UNIQUE,
  seq          bigint UNIQUE,
  type         text NOT NULL,
  tenant_id    uuid,
  tenant_slug  text,
  operation_id text,
  -- One event per fact, whoever records it (a runner that lost its lease, a step run twice).
  dedupe_key   text UNIQUE,
  data         jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE INDEX events_unpublished ON events (n) WHERE seq IS NULL;
CREATE INDEX events_by_tenant ON events (tenant_id, seq) WHERE seq IS NOT NULL;

CREATE TABLE webhooks (
  id              text PRIMARY KEY,
  url             text NOT NULL,
  event_types     text[] NOT NULL,
  description     text,
  -- The signing secret is in the secret store (its name: tenantry/platform/webhook/<id>), never here.
  status          text NOT NULL CHECK (status IN ('enabled', 'disabled', 'deleted')),
  disabled_reason text,
  -- When the oldest delivery still failing first failed; past TENANTRY_WEBHOOK_DISABLE_AFTER_MS the
  -- webhook is disabled (with a webhook.disabled event).
  failing_since   timestamptz,
  created_by      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A webhook's events of one tenant (or of the fleet, '-') are delivered in order, one at a time: the
-- stream's lease says who is delivering (a runner killed mid-delivery lets it expire).
CREATE TABLE webhook_streams (
  webhook_id   text NOT NULL REFERENCES webhooks (id),
  stream       text NOT NULL,
  lease_owner  text,
  lease_until  timestamptz,
  PRIMARY KEY (webhook_id, stream)
);

CREATE TABLE webhook_deliveries (
  id              bigserial PRIMARY KEY,
  webhook_id      text NOT NULL REFERENCES webhooks (id),
  event_id        text NOT NULL REFERENCES events (id),
  event_seq       bigint NOT NULL,
  stream          text NOT NULL,
  status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'abandoned')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_attempt_at timestamptz,
  -- Its first failed attempt: one refused for longer than the disable period is abandoned (the stream
  -- moves on) when the webhook itself still works.
  first_failed_at timestamptz,
  last_status     integer,
  last_error      text,
  delivered_at    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, stream, event_seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id DESC);

-- A tenant's data in one archive (export/): where it is, what its manifest says, until when it is kept.
CREATE TABLE exports (
  id           text PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  tenant_slug  text NOT NULL,
  tier         text NOT NULL,
  operation_id text NOT NULL,
  status       text NOT NULL CHECK (status IN ('pending', 'ready', 'failed', 'expired')),
  -- An offboarding's last export (?export=true), kept for TENANTRY_FINAL_EXPORT_RETENTION_DAYS.
  final        boolean NOT NULL DEFAULT false,
  path         text NOT NULL,
  bytes        bigint,
  sha256       text,
  manifest     jsonb,
  error        text,
  created_by   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  ready_at     timestamptz,
  expires_at   timestamptz NOT NULL
);
CREATE INDEX exports_by_tenant ON exports (tenant_id, created_at DESC);
CREATE INDEX exports_expiring ON exports (expires_at) WHERE status IN ('ready', 'failed', 'pending');
