-- Tenant schema template, version 1.
-- Applied with search_path set to the target schema, so names stay unqualified.
-- Rules: every table carries tenant_id, and tenant_id is the first column of every
-- primary key, unique constraint and index. That keeps the application tier-agnostic
-- and makes promotion between tiers a straight copy.

CREATE TABLE users (
  tenant_id  uuid        NOT NULL,
  id         uuid        NOT NULL DEFAULT gen_random_uuid(),
  email      text        NOT NULL,
  name       text        NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, email)
);

CREATE TABLE documents (
  tenant_id  uuid        NOT NULL,
  id         uuid        NOT NULL DEFAULT gen_random_uuid(),
  owner_id   uuid        NOT NULL,
  title      text        NOT NULL,
  body       text        NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX documents_owner_idx ON documents (tenant_id, owner_id);

CREATE TABLE settings (
  tenant_id  uuid        NOT NULL,
  key        text        NOT NULL,
  value      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
