-- Up Migration
-- The local target's root key, checked: `key_check` is a constant sealed (AES-256-GCM) under the root
-- key, so a process holding another key refuses to start with a message saying what to copy, instead
-- of failing on the first secret it opens. One key is `current`. A re-wrap (`npm run rekey`) records
-- its new key as `next`, re-wraps every data key under it, then makes it current and the old one
-- `retired` (its check kept, so a process still holding it is told that it was retired).
-- Expand-only: a process of an earlier build ignores the table and the new column.
CREATE TABLE root_keys (
  id         text PRIMARY KEY,
  state      text NOT NULL CHECK (state IN ('current', 'next', 'retired')),
  key_check  bytea NOT NULL,
  -- A re-wrap's progress (for its report; the data keys' own root_key_id is what makes it resumable).
  rewrapped  integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz
);
CREATE UNIQUE INDEX root_keys_one_current ON root_keys ((true)) WHERE state = 'current';
CREATE UNIQUE INDEX root_keys_one_next ON root_keys ((true)) WHERE state = 'next';

-- The root key that wraps each data key. NULL: the current one (a key wrapped by an earlier build).
ALTER TABLE local_keys ADD COLUMN root_key_id text REFERENCES root_keys (id);
