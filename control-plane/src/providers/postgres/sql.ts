import type { Queryable } from '../../domain/queryable.js';

/**
 * Identifier and literal handling for DDL, which cannot take bind parameters.
 * Every identifier is validated against a strict pattern first and then quoted;
 * nothing from input is ever spliced in raw.
 */
const IDENT_RE = /^[a-z_][a-z0-9_]{0,62}$/;

export function ident(name: string): string {
  if (!IDENT_RE.test(name)) throw new Error(`invalid SQL identifier: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** A string literal for DDL positions that cannot take a bind parameter (e.g. a SCRAM verifier). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new Error('NUL byte in SQL literal');
  return `'${value.replaceAll("'", "''")}'`;
}

export type { Queryable };

/** Run `fn` in a transaction on a single client. */
export async function inTransaction<T>(db: Queryable, fn: () => Promise<T>): Promise<T> {
  await db.query('BEGIN');
  try {
    const out = await fn();
    await db.query('COMMIT');
    return out;
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/**
 * Takes the lock `name` for the rest of the caller's transaction. Tenantry's serialization on a
 * data-plane database: a row lock in `tenantry_meta.locks`, a table no tenant role can see, so a
 * tenant can neither take it nor hold it against us. (Advisory locks need no privilege: any
 * session can take any key, and the keys were computable from our source.) In a database where
 * that table does not exist yet (the maintenance database, a silo created by an older version)
 * it falls back to a transaction-level advisory lock; every control-plane session on the data
 * plane runs under a lock_timeout, so a tenant holding that key costs a retry, never a stall.
 * Returns one statement, for multi-statement strings.
 */
export function metaLockSql(name: string): string {
  const n = literal(name);
  return `DO $tenantry_lock$ BEGIN
  IF pg_catalog.to_regclass('tenantry_meta.locks') IS NOT NULL THEN
    INSERT INTO tenantry_meta.locks AS l (name) VALUES (${n}) ON CONFLICT (name) DO UPDATE SET name = l.name;
  ELSE
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(${n} || '.' || pg_catalog.current_database()));
  END IF;
END $tenantry_lock$`;
}

/**
 * The same lock as one plain statement, for a database known to have the locks table (it fails with
 * 42P01 where it does not): no PL/pgSQL block to compile per use.
 */
export function metaLockRowSql(name: string): string {
  return `INSERT INTO tenantry_meta.locks AS l (name) VALUES (${literal(name)}) ON CONFLICT (name) DO UPDATE SET name = l.name`;
}

export async function metaLock(db: Queryable, name: string): Promise<void> {
  await db.query(metaLockSql(name));
}

/**
 * Serializes database-ACL changes made from sessions on the same database, within the caller's
 * transaction. Concurrent GRANT/REVOKE/DROP OWNED touching one pg_database row otherwise fail
 * with "tuple concurrently updated". (The lock is per database, which is the scope we need: the
 * shared data database's ACL is only ever changed from sessions on it.)
 */
export async function lockDatabaseAcl(db: Queryable): Promise<void> {
  await metaLock(db, ACL_LOCK);
}

export const ACL_LOCK = 'tenantry.acl';

/**
 * `pg_class c` restricted to the relations of one schema, found through their dependency on it:
 * pg_class has no index on its namespace alone, so filtering on relnamespace (as `ALL TABLES IN
 * SCHEMA` does) reads the whole catalog, thousands of rows per thousand tenants, while pg_depend is
 * indexed by what is referenced. `namespaceOid` is an SQL expression.
 */
export function relationsOfSchemaSql(namespaceOid: string): string {
  return `pg_depend d JOIN pg_class c ON c.oid = d.objid
    AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_namespace'::regclass
    AND d.refobjid = ${namespaceOid} AND d.deptype = 'n'`;
}
