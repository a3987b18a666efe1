import { ident, type Queryable } from './sql.js';

/**
 * `tenantry_meta` holds Tenantry's own bookkeeping inside a data-plane database
 * (template versions, pool membership, the locks Tenantry serializes with). No tenant role is
 * granted anything on it.
 */
export const META_SCHEMA = 'tenantry_meta';

export async function ensureMeta(db: Queryable): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT to_regclass('tenantry_meta.locks') IS NOT NULL AS ok`,
  );
  if (rows[0]?.ok) return;
  await db.query(`
    CREATE SCHEMA IF NOT EXISTS ${ident(META_SCHEMA)};
    REVOKE ALL ON SCHEMA ${ident(META_SCHEMA)} FROM PUBLIC;
    CREATE TABLE IF NOT EXISTS tenantry_meta.schema_versions (
      schema_name text PRIMARY KEY,
      version     integer NOT NULL,
      applied_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS tenantry_meta.pool_members (
      tenant_id  uuid PRIMARY KEY,
      slug       text NOT NULL UNIQUE,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    -- Tenantry's locks on this database (see metaLockSql): rows no tenant role can see or lock.
    CREATE TABLE IF NOT EXISTS tenantry_meta.locks (name text PRIMARY KEY);
  `);
}
