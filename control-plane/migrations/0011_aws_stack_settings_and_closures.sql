-- Up Migration
-- The aws target (docs/aws.md). Expand-only: an earlier build ignores both tables.
--
-- Each tenant stack's Pulumi settings (its secrets provider, and the key or salt that provider
-- generated when the stack was created), so that any worker, or a fresh container without the
-- stack's `Pulumi.<stack>.yaml`, runs the stack with the provider it was created with (pulumi#8183:
-- the Automation API applies a secrets provider only to a stack it creates). `encrypted_key` is the
-- stack's data key encrypted by its secrets provider (KMS), never a key in the clear; no passphrase
-- is stored.
CREATE TABLE pulumi_stack_settings (
  stack            text PRIMARY KEY,
  secrets_provider text,
  encrypted_key    text,
  encryption_salt  text,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The account tier's closures, queued by offboarding and requested within Organizations' CloseAccount
-- quota (10% of member accounts per rolling 30 days, at least 10): `requested_at` is when CloseAccount
-- was sent, and the requests of the last 30 days are what the quota counts.
CREATE TABLE account_closures (
  account_id   text PRIMARY KEY CHECK (account_id ~ '^[0-9]{12}$'),
  tenant_id    uuid NOT NULL,
  tenant_slug  text NOT NULL,
  queued_at    timestamptz NOT NULL DEFAULT now(),
  requested_at timestamptz
);
CREATE INDEX account_closures_queued ON account_closures (queued_at) WHERE requested_at IS NULL;
CREATE INDEX account_closures_requested ON account_closures (requested_at) WHERE requested_at IS NOT NULL;
