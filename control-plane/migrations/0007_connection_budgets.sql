-- Up Migration
-- One row per data-plane cluster: its connection slots as last read from the server. Onboardings and
-- promotions that add connections lock the row, so two of them never both squeeze past the budget;
-- the committed connections are computed from the tenants and their operations under that lock.
CREATE TABLE connection_budgets (
  cluster                        text PRIMARY KEY,
  max_connections                integer NOT NULL CHECK (max_connections > 0),
  superuser_reserved_connections integer NOT NULL CHECK (superuser_reserved_connections >= 0),
  reserved_connections           integer NOT NULL CHECK (reserved_connections >= 0),
  read_at                        timestamptz NOT NULL DEFAULT now()
);
